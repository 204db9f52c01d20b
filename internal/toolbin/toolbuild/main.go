// Command toolbuild builds the third-party tools the tests and the demo
// start (see package toolbin), skipping those that are up to date, one
// after another: the tools modules share hundreds of packages (the standard
// library, grpc, containerd's API), which the first build compiles and the
// later ones take from the Go build cache.
//
//	go run ./internal/toolbin/toolbuild [-dir DIR] [-demo] NAME...
//	go run ./internal/toolbin/toolbuild [-dir DIR] -check NAME...
//
// -demo builds containerd with toolbin.ContainerdDemoTags (without the
// plugins `make demo` never starts); give it a directory of its own.
// -check builds nothing and exits 0 when every NAME is up to date in DIR,
// 1 otherwise (`make demo` uses a full containerd when one is there).
//
// It prints one line per tool: "tools: NAME up to date" or
// "tools: NAME built in Ns" (`make demo` reads them), and exits 1 with the
// build's output when one fails.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/ociseek/ociseek/internal/toolbin"
)

func main() {
	dir := flag.String("dir", "", "bin directory (default $"+toolbin.EnvDir+", else <repository>/bin/tools)")
	demo := flag.Bool("demo", false, "build containerd with the demo's tags ("+toolbin.ContainerdDemoTags+")")
	check := flag.Bool("check", false, "build nothing; exit 0 when every NAME is up to date, 1 otherwise")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: toolbuild [-dir DIR] [-demo | -check] NAME...")
		os.Exit(2)
	}
	if *dir == "" {
		d, err := toolbin.Dir()
		if err != nil {
			fmt.Fprintf(os.Stderr, "tools: %v\n", err)
			os.Exit(1)
		}
		*dir = d
	}
	if *check {
		for _, name := range flag.Args() {
			if !toolbin.Fresh(*dir, name) {
				os.Exit(1)
			}
		}
		return
	}
	for _, name := range flag.Args() {
		tags := ""
		if *demo && name == "containerd" {
			tags = toolbin.ContainerdDemoTags
		}
		if err := ensure(*dir, name, tags); err != nil {
			fmt.Fprintf(os.Stderr, "tools: %s FAILED: %v\n", name, err)
			os.Exit(1)
		}
	}
}

// ensure builds one tool unless it is up to date, and says which.
func ensure(dir, name, tags string) error {
	start := time.Now()
	built := false
	logf := func(string, ...any) { built = true }
	if _, err := toolbin.EnsureIn(context.Background(), dir, name, tags, logf); err != nil {
		return err
	}
	if built {
		fmt.Printf("tools: %s built in %ds\n", name, int(time.Since(start).Seconds()))
	} else {
		fmt.Printf("tools: %s up to date\n", name)
	}
	return nil
}
