package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ociseek/ociseek/integration/harness"
	"github.com/ociseek/ociseek/internal/toolbin"
)

// sample is the demo image's data layer: over 100 MB uncompressed, random
// and compressible files and thousands of small files.
var sample = harness.DataParams{Seed: 2, RandomBytes: 64 << 20, TextBytes: 48 << 20, SmallFiles: 5000}

// result is one way of starting the container.
type result struct {
	firstOutput time.Duration
	fetched     int64
}

// options are the demo's flags.
type options struct {
	// bin holds prebuilt ociseek binaries; empty: build them.
	bin string
	// done is the number of steps the calling script has shown.
	done int
}

// ownSteps is the number of steps run announces when the binaries are
// prebuilt; one more when it builds them.
const ownSteps = 4

func run(ctx context.Context, opts options, stdout, stderr io.Writer) (err error) {
	dir, err := os.MkdirTemp("", "ociseek-demo-")
	if err != nil {
		return fmt.Errorf("demo directory: %w", err)
	}
	c := &cleanups{log: stderr}
	defer func() {
		// ^C is no failure to inspect: stop, unmount and remove everything.
		interrupted := ctx.Err() != nil
		c.failed = err != nil && !interrupted
		c.run()
		if interrupted {
			err = fmt.Errorf("interrupted; stopped everything it had started")
		}
		if !c.failed {
			_ = os.RemoveAll(dir)
		} else {
			fmt.Fprintf(stderr, "demo: keeping %s for inspection\n", dir)
		}
	}()
	s := c.scope()
	p := &progress{w: stdout, n: opts.done, total: opts.done + ownSteps}
	if opts.bin == "" {
		p.total++
	}
	tools, olareg, err := prepare(ctx, p, opts.bin, dir, stderr)
	if err != nil {
		return err
	}

	p.step("starting olareg and pushing the sample image with a SOCI index")
	reg, err := harness.StartRegistryIn(s, olareg, dir+"/registry")
	if err != nil {
		return err
	}
	proxy, err := harness.StartCountingProxyIn(s, reg.Host)
	if err != nil {
		return err
	}
	plainRef, lazyRef, err := pushSample(ctx, tools, proxy.Host)
	if err != nil {
		return err
	}
	p.step("starting containerd and ociseek-snapshotter in %s", os.TempDir())
	// The daemon's defaults, background completion included: it starts a
	// second after the mount, once the container's start-up reads are
	// done, and explain shows the lazy layer as "mounted" (verified in the
	// background), as on a node.
	env, err := harness.NewEnvIn(s, tools, harness.EnvOptions{Daemon: harness.DaemonOptions{BackgroundFetch: true}})
	if err != nil {
		return err
	}

	p.step("lazy: ociseek pull + ctr run --snapshotter soci")
	lazy, err := timeFirstOutput(ctx, proxy, func() (string, error) {
		if _, err := env.Pull(ctx, lazyRef); err != nil {
			return "", err
		}
		return env.RunContainer(ctx, lazyRef, "demo-lazy")
	})
	if err != nil {
		return err
	}
	explain, _, err := env.Explain(ctx, lazyRef)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, explain)
	// The full pull's bytes are counted below: the lazy layer's background
	// completion must not run into them.
	complete, err := awaitComplete(ctx, env.Daemon)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "demo: the lazy layer was complete and verified in the background %.1f s later (%.1f MB fetched in all)\n",
		complete.Seconds(), mb(proxy.BlobBytes()))

	p.step("full pull: ctr image pull + ctr run --snapshotter overlayfs")
	full, err := timeFirstOutput(ctx, proxy, func() (string, error) {
		if _, err := env.Containerd.Ctr(ctx, "images", "pull", "--plain-http", "--snapshotter", "overlayfs", plainRef); err != nil {
			return "", err
		}
		return env.Containerd.Ctr(ctx, "run", "--rm", "--snapshotter", "overlayfs", plainRef, "demo-full")
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "demo: first output after %.1f s lazily (%.1f MB fetched) vs %.1f s with a full pull (%.1f MB fetched)\n",
		lazy.firstOutput.Seconds(), mb(lazy.fetched), full.firstOutput.Seconds(), mb(full.fetched))
	return nil
}

// prepare returns the programs the demo starts: the ociseek binaries from
// bin, or built into dir when bin is empty, and containerd and olareg from
// the tools directory, built from their pinned modules if missing. Builds
// report to stderr.
func prepare(ctx context.Context, p *progress, bin, dir string, stderr io.Writer) (harness.Tools, string, error) {
	if bin == "" {
		p.step("building ociseek, containerd and olareg where missing (first time: several minutes)")
	}
	tools, err := harness.FindTools()
	if err != nil {
		return tools, "", err
	}
	olareg, err := toolbin.Ensure(ctx, "olareg", func(format string, args ...any) {
		fmt.Fprintf(stderr, format+"\n", args...)
	})
	if err != nil {
		return tools, "", fmt.Errorf("olareg: %w (run `make tools`)", err)
	}
	if bin != "" {
		tools.Ociseek = filepath.Join(bin, "ociseek")
		tools.Snapshotter = filepath.Join(bin, "ociseek-snapshotter")
		return tools, olareg, nil
	}
	mod, err := harness.ModuleDir()
	if err != nil {
		return tools, "", err
	}
	if err := harness.BuildProject(ctx, mod, dir, &tools); err != nil {
		return tools, "", err
	}
	return tools, olareg, nil
}

// pushSample builds and pushes the sample image under plain:v1 and its
// SOCI-enabled (v2) copy under plain:v1-soci; it returns both references.
func pushSample(ctx context.Context, tools harness.Tools, host string) (plain, lazy string, err error) {
	base, err := harness.BusyboxLayer(tools.Busybox)
	if err != nil {
		return "", "", err
	}
	data, err := harness.DataLayer(sample, os.TempDir()+"/ociseek-integration-cache")
	if err != nil {
		return "", "", err
	}
	img := harness.Image{Layers: []harness.Layer{base, data}, Cmd: []string{"/bin/cat", "/" + harness.HelloPath}}
	if _, err := harness.PushImage(ctx, host, "sample", "v1", img); err != nil {
		return "", "", err
	}
	plain, lazy = host+"/sample:v1", host+"/sample:v1-soci"
	if _, err := harness.Run(ctx, 10*time.Minute, tools.Ociseek, "convert", plain, lazy); err != nil {
		return "", "", err
	}
	return plain, lazy, nil
}

// timeFirstOutput runs start and measures the time until it returns the
// container's output, and the blob bytes the registry served meanwhile.
func timeFirstOutput(ctx context.Context, proxy *harness.CountingProxy, start func() (string, error)) (result, error) {
	proxy.Reset()
	t0 := time.Now()
	out, err := start()
	if err != nil {
		return result{}, err
	}
	if out != harness.HelloContent {
		return result{}, fmt.Errorf("container printed %q, want %q", out, harness.HelloContent)
	}
	return result{firstOutput: time.Since(t0), fetched: proxy.BlobBytes()}, nil
}

func mb(n int64) float64 { return float64(n) / 1e6 }

// completeTimeout bounds the wait for background completion of the lazy
// layer (75 MiB; seconds on loopback).
const completeTimeout = 3 * time.Minute

// awaitComplete waits until the daemon has no mounted layer left
// unverified, and returns how long that took.
func awaitComplete(ctx context.Context, d *harness.Daemon) (time.Duration, error) {
	start := time.Now()
	for {
		n, err := d.Metric("ociseek_fs_layers_unverified")
		if err == nil && n == 0 {
			return time.Since(start), nil
		}
		if time.Since(start) > completeTimeout {
			return 0, fmt.Errorf("the lazy layer was not complete %v after the first output (last metric read: %v)", completeTimeout, err)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
