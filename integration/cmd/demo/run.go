package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ociseek/ociseek/integration/harness"
	"github.com/ociseek/ociseek/internal/regtest"
)

// sample is the demo image's data layer: over 100 MB uncompressed, random
// and compressible files and thousands of small files.
var sample = harness.DataParams{Seed: 2, RandomBytes: 64 << 20, TextBytes: 48 << 20, SmallFiles: 5000}

// result is one way of starting the container.
type result struct {
	firstOutput time.Duration
	fetched     int64
}

func run(ctx context.Context, stdout, stderr io.Writer) (err error) {
	dir, err := os.MkdirTemp("", "ociseek-demo-")
	if err != nil {
		return err
	}
	r := &runner{dir: dir, log: stderr}
	defer r.finish(&err)

	tools, err := harness.FindTools()
	if err != nil {
		return err
	}
	step(stdout, "building ociseek")
	mod, err := harness.ModuleDir()
	if err != nil {
		return err
	}
	if err := harness.BuildProject(ctx, mod, dir, &tools); err != nil {
		return err
	}
	step(stdout, "starting a registry and pushing the sample image with a SOCI index")
	reg := regtest.Start(r, regtest.KindDistribution)
	proxy := harness.StartCountingProxy(r, reg.Host)
	plainRef, lazyRef, err := pushSample(ctx, tools, proxy.Host)
	if err != nil {
		return err
	}
	step(stdout, "starting containerd and ociseek-snapshotter in "+os.TempDir())
	env := harness.NewEnv(r, tools, harness.EnvOptions{})

	step(stdout, "lazy: ociseek pull + ctr run --snapshotter soci")
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

	step(stdout, "full pull: ctr image pull + ctr run --snapshotter overlayfs")
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

func step(w io.Writer, msg string) { fmt.Fprintf(w, "demo: %s\n", msg) }

func mb(n int64) float64 { return float64(n) / 1e6 }
