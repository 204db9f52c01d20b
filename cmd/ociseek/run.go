package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// usageError is an error in how the command was called (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// usagef returns a usageError with a formatted message.
func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// isUsage reports whether err is (or wraps) a usageError.
func isUsage(err error) bool {
	var u *usageError
	return errors.As(err, &u)
}

// command is one verb (or group of verbs) of the CLI.
type command struct {
	// name is the word that selects the command.
	name string
	// summary is the one-line description shown by help.
	summary string
	// run executes the command with the arguments after its name.
	run func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands lists the top-level verbs. Each verb's file provides its command
// value; a new verb adds one line here.
func commands() []command {
	return []command{
		createCommand(),
		convertCommand(),
		indexCommand(),
		pullCommand(),
		explainCommand(),
		ztocCommand(),
		mountCommand(),
	}
}

// run executes the command line args (without the program name), writing
// results to stdout and diagnostics and help to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatch(ctx, "ociseek", commands(), args, stdout, stderr)
}

// dispatch selects the command named by args[0] among cmds and runs it.
func dispatch(ctx context.Context, prog string, cmds []command, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		printCommands(stderr, prog, cmds)
		return usagef("no command given (run '%s help')", prog)
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		printCommands(stdout, prog, cmds)
		return nil
	}
	i := slices.IndexFunc(cmds, func(c command) bool { return c.name == args[0] })
	if i < 0 {
		printCommands(stderr, prog, cmds)
		return usagef("unknown command %q (run '%s help')", args[0], prog)
	}
	err := cmds[i].run(ctx, args[1:], stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil // help was asked for and printed
	}
	return err
}

func printCommands(w io.Writer, prog string, cmds []command) {
	fmt.Fprintf(w, "Usage: %s COMMAND [ARGS]\n\nCommands:\n", prog)
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun '%s COMMAND -h' for a command's flags.\n", prog)
}

// newFlagSet returns a flag set for a verb that reports errors instead of
// exiting and prints its help (usage line, description, flags) to w.
func newFlagSet(name, usage, description string, w io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(w)
	fs.Usage = func() {
		fmt.Fprintf(w, "Usage: %s %s\n\n%s\n", name, usage, strings.TrimSpace(description))
		var hasFlags bool
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintf(w, "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseArgs parses flags anywhere among args (flag stops at the first
// positional argument; users expect "VERB FILE --flag" to work too) and
// returns the positional arguments; everything after "--" is positional.
// It checks that there are exactly nargs of them. A request for help is
// returned as flag.ErrHelp.
func parseArgs(fs *flag.FlagSet, args []string, nargs int) ([]string, error) {
	var pos, rest []string
	if i := slices.Index(args, "--"); i >= 0 {
		args, rest = args[:i], args[i+1:]
	}
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	pos = append(pos, rest...)
	if len(pos) != nargs {
		fs.Usage()
		return nil, usagef("%s: want %d arguments, got %d", fs.Name(), nargs, len(pos))
	}
	return pos, nil
}
