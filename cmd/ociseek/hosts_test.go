package main

import (
	"context"
	"flag"
	"net/http"
	"strings"
	"testing"

	"github.com/ociseek/ociseek/internal/hosts/hoststest"
	"github.com/ociseek/ociseek/internal/regtest"
)

// TestRegistryVerbsThroughMirror: with --hosts-dir naming a pull/resolve
// mirror of the image's registry, "ociseek create" reads the image from
// the mirror and pushes the index to the registry (the only push host);
// "ociseek index ls" then finds that index, which the mirror lacks, at the
// registry; "ociseek pull"'s resolver asks the mirror.
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
