package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ociseek/ociseek/integration/harness"
	"github.com/ociseek/ociseek/internal/regtest"
)

// loadContainers is how many containers TestConcurrentContainers starts at
// once from one image.
const loadContainers = 20

// loadDeadline bounds the concurrent runs: far above what they take (about
// 15 s on a 2-core machine), so that only a hang reaches it.
const loadDeadline = 3 * time.Minute

// layerSums returns the sha256 of every regular file of a gzip tar layer,
// keyed by path.
func layerSums(t *testing.T, l harness.Layer) map[string]string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(l.Blob))
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]string{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return sums
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		s := sha256.New()
		if _, err := io.Copy(s, tr); err != nil {
			t.Fatal(err)
		}
		sums[strings.TrimPrefix(h.Name, "./")] = hex.EncodeToString(s.Sum(nil))
	}
}

// TestConcurrentContainers starts 20 containers at once from one lazily
// loaded image (ctr run --snapshotter soci). All of them share the data
// layer's FUSE mount: each prints the hello file and checksums a small file
// of its own and the multi-span text file they all read at the same time.
// Every container must succeed and print the layer's bytes. A hang fails
// the test after loadDeadline with the daemon's goroutine dump (SIGQUIT)
// rather than passing as slow.
func TestConcurrentContainers(t *testing.T) {
	img := testImage(t, smallData)
	sums := layerSums(t, img.Layers[1])
	const shared = "data/text/doc-000.txt"
	if sums[shared] == "" {
		t.Fatalf("data layer has no %s", shared)
	}
	reg := regtest.Start(t, regtest.KindDistribution)
	proxy, ref := lazyImage(t, reg, img, "load", indexV2, indexFlags)
	env := harness.NewEnv(t, tools, harness.EnvOptions{})
	ctx := testContext(t)
	if out, err := env.Pull(ctx, ref); err != nil {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	proxy.Reset()

	runCtx, cancel := context.WithTimeout(ctx, loadDeadline)
	defer cancel()
	start := make(chan struct{})
	outs := make([]string, loadContainers)
	errs := make([]error, loadContainers)
	var wg sync.WaitGroup
	for i := range loadContainers {
		own := fmt.Sprintf("data/small/d%03d/f%05d", i*97/100, i*97)
		if sums[own] == "" {
			t.Fatalf("data layer has no %s", own)
		}
		wg.Go(func() {
			<-start
			outs[i], errs[i] = env.RunContainer(runCtx, ref, fmt.Sprintf("load-%02d", i),
				"/bin/sh", "-c", fmt.Sprintf("cat /%s && sha256sum /%s /%s", harness.HelloPath, own, shared))
		})
	}
	began := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(began)
	if runCtx.Err() != nil {
		// Most likely a deadlock: ask the daemon for its goroutines (a Go
		// program prints them on SIGQUIT) before the cleanup stops it.
		if err := env.Daemon.Signal(syscall.SIGQUIT); err == nil {
			time.Sleep(2 * time.Second)
		}
		t.Fatalf("%d containers not done after %v; %s; daemon log:\n%s", loadContainers, loadDeadline, env, env.Daemon.Tail(200_000))
	}
	for i := range loadContainers {
		own := fmt.Sprintf("data/small/d%03d/f%05d", i*97/100, i*97)
		want := harness.HelloContent + sums[own] + "  /" + own + "\n" + sums[shared] + "  /" + shared + "\n"
		if errs[i] != nil || outs[i] != want {
			t.Errorf("container %d: err=%v, printed %q, want %q", i, errs[i], outs[i], want)
		}
	}
	t.Logf("%d containers started at once, all done in %v; registry served %s", loadContainers, took.Round(time.Millisecond), proxy)
	if mounts, err := env.FUSEMounts(); err != nil || len(mounts) != 1 {
		t.Errorf("FUSE mounts under the daemon root: %v (%v), want the one data layer mount shared by every container", mounts, err)
	}
}
