package main

import (
	"context"
	"flag"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/internal/hosts/hoststest"
	"github.com/ociseek/ociseek/internal/regtest"
)

// TestRegistryVerbsThroughMirror: with --hosts-dir naming a pull/resolve
// mirror of the image's registry, "ociseek create" reads the image from
// the mirror and pushes the index to the registry (the only push host);
// "ociseek index ls" then finds that index, which the mirror lacks, at the
// registry; "ociseek mount" reads the layer from the mirror; "ociseek
// pull"'s resolver asks the mirror.
func TestRegistryVerbsThroughMirror(t *testing.T) {
	up := regtest.Start(t, regtest.KindDistribution)
	mirror := regtest.Start(t, regtest.KindDistribution)
	layers := [][]byte{testLayer(t, 1), testLayer(t, 2)}
	up.PushImage(t, "cli", layers, nil)
	mirror.PushImage(t, "cli", layers, nil)
	upP := hoststest.StartProxy(t, up.Host, hoststest.ProxyOptions{})
	mirP := hoststest.StartProxy(t, mirror.Host, hoststest.ProxyOptions{})
	dir := t.TempDir()
	hoststest.WriteHosts(t, dir, upP.Host, `
[host."http://`+mirP.Host+`"]
  capabilities = ["pull", "resolve"]
`)
	ref := upP.Host + "/cli:latest"

	out, _, err := runRegistryCLI(t, "create", "--hosts-dir", dir, "--span-size", "65536", "--min-layer-size", "0", ref)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	idx := strings.Fields(out)[0]
	var layerBytes int64
	for _, l := range layers {
		layerBytes += int64(len(l))
	}
	if mirP.Bytes() < layerBytes {
		t.Errorf("mirror sent %d bytes, less than the layers' %d", mirP.Bytes(), layerBytes)
	}
	for _, req := range upP.Requests() {
		if req.Method == http.MethodGet && strings.Contains(req.Path, "/blobs/") {
			t.Errorf("create read %s from the registry, not the mirror", req.Path)
		}
	}
	for _, req := range mirP.Requests() {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			t.Errorf("create pushed %s %s to the pull-only mirror", req.Method, req.Path)
		}
	}

	out, _, err = runRegistryCLI(t, "index", "ls", "--hosts-dir", dir, ref)
	if err != nil || !strings.Contains(out, idx) {
		t.Fatalf("index ls: %q, %v; want index %s", out, err, idx)
	}

	// ociseek mount: the index and zTOC come from the registry (the mirror
	// lacks them), the layer's bytes from the mirror.
	layer := digest.FromBytes(layers[1]).String()
	mp := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done, _ := runMountVerb(ctx, "--hosts-dir", dir, ref, layer, mp)
	mirBefore := mirP.Bytes()
	readThroughMount(t, done, filepath.Join(mp, "f3"), strings.Repeat("seed 2 file 3\n", 4000))
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("mount verb: %v", err)
	}
	for _, req := range upP.Requests() {
		if strings.HasSuffix(req.Path, "/blobs/"+layer) {
			t.Errorf("mount read the layer from the registry: %s %s", req.Method, req.Path)
		}
	}
	if mirP.Bytes() == mirBefore {
		t.Error("mount read nothing from the mirror")
	}

	fs := flag.NewFlagSet("pull", flag.ContinueOnError)
	rf := addRegistryFlags(fs)
	if err := fs.Parse([]string{"--hosts-dir", dir}); err != nil {
		t.Fatal(err)
	}
	before := len(upP.Requests())
	if _, _, err := newResolver(rf).Resolve(context.Background(), ref); err != nil {
		t.Fatalf("pull's resolver: %v", err)
	}
	if n := len(upP.Requests()) - before; n != 0 {
		t.Errorf("pull's resolver asked the registry %d times, not the mirror", n)
	}
}
