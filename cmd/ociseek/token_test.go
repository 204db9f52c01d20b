package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// TestRegistryVerbsTokenAuth drives the registry verbs against a
// distribution registry with `auth: token`, whose token server issues 2 s
// tokens for the repositories asked: create (reads the image, pushes the
// zTOCs and the index), index ls, convert from one repository to another,
// and a lazy mount whose file is read after the mount's first token has
// expired. A wrong password is refused by the token server, and the error
// says so.
func TestRegistryVerbsTokenAuth(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	ts := regtest.StartTokenServer(t, "carol", "t0ken", 2*time.Second)
	reg := regtest.StartWithTokenAuth(t, ts)
	// The second layer's files are random, so each needs its own spans:
	// the file read after the TTL is fetched then, not with the first.
	layers := [][]byte{testLayer(t, 1), randomLayer(t, 4, 256<<10)}
	reg.PushImage(t, "tok", layers, nil)
	ref := reg.Ref("tok", "latest")
	user := []string{"--user", "carol:t0ken"}

	out, _, err := runRegistryCLI(t, append(append([]string{"create", "--span-size", "65536", "--min-layer-size", "0"}, user...), ref)...)
	if err != nil {
		t.Fatalf("create with tokens: %v", err)
	}
	idx, _, _ := strings.Cut(out, "\t")
	out, _, err = runRegistryCLI(t, append(append([]string{"index", "ls"}, user...), ref)...)
	if err != nil || !strings.Contains(out, idx) {
		t.Fatalf("index ls = %q, %v; want it to list %s", out, err, idx)
	}
	dst := reg.Ref("tok-converted", "soci")
	if _, _, err := runRegistryCLI(t, append(append([]string{"convert", "--span-size", "65536", "--min-layer-size", "0"}, user...), ref, dst)...); err != nil {
		t.Fatalf("convert between repositories with tokens: %v", err)
	}
	out, _, err = runRegistryCLI(t, append(append([]string{"index", "ls"}, user...), dst)...)
	if err != nil || !strings.Contains(out, "v2-annotation") {
		t.Fatalf("index ls of the converted image = %q, %v; want its v2 index", out, err)
	}
	for _, tok := range ts.Issued() {
		for _, s := range tok.Scopes {
			if !strings.HasPrefix(s, "repository:tok") {
				t.Errorf("a token was asked for scope %q, outside the test's repositories", s)
			}
		}
	}

	// The lazy mount authenticates with the docker config file; the file
	// is read after the token of the mount's probe has expired.
	t.Setenv("DOCKER_CONFIG", reg.WriteDockerConfig(t, t.TempDir(), "carol", "t0ken"))
	mp := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	layer := digest.FromBytes(layers[1]).String()
	done, _ := runMountVerb(ctx, ref, layer, mp)
	readThroughMount(t, done, filepath.Join(mp, "r0"), string(randomBody(0, 256<<10)))
	before := len(ts.Issued())
	time.Sleep(ts.TTL + 500*time.Millisecond)
	readThroughMount(t, done, filepath.Join(mp, "r3"), string(randomBody(3, 256<<10)))
	if len(ts.Issued()) == before {
		t.Error("the read after the TTL took no new token: the test did not exercise renewal")
	}
	refused := 0
	for _, r := range reg.Requests(t) {
		if r.Status == http.StatusUnauthorized && strings.Contains(r.Path, "/blobs/"+layer) {
			refused++
		}
	}
	if refused == 0 {
		t.Error("no range request was refused: the token did not expire during the mount")
	}
	stopMountVerb(t, cancel, done)

	// ociseek pull's resolver (containerd's docker resolver with the
	// CLI's credentials) resolves and reads a layer, before and after
	// its token expires.
	fs := flag.NewFlagSet("pull", flag.ContinueOnError)
	rf := addRegistryFlags(fs)
	if err := fs.Parse(user); err != nil {
		t.Fatal(err)
	}
	resolver := newResolver(rf)
	ctx = context.Background()
	name, desc, err := resolver.Resolve(ctx, ref)
	if err != nil {
		t.Fatalf("pull's resolver: %v", err)
	}
	fetcher, err := resolver.Fetcher(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		rc, err := fetcher.Fetch(ctx, desc)
		if err != nil {
			t.Fatalf("pull's fetcher, round %d: %v", i, err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || digest.FromBytes(b) != desc.Digest {
			t.Fatalf("pull's fetcher, round %d: %d bytes, %v", i, len(b), err)
		}
		if i == 0 {
			time.Sleep(ts.TTL + 500*time.Millisecond)
		}
	}

	_, _, err = runRegistryCLI(t, "index", "ls", "--user", "carol:wrong", ref)
	if err == nil || !strings.Contains(err.Error(), "refused the user and password from --user") {
		t.Errorf("index ls with a wrong password: %v, want the token server's refusal explained", err)
	}
}

// randomBody is n pseudo-random bytes, deterministic in seed.
func randomBody(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// randomLayer is a gzip tar layer of files r0..r<files-1>, each size
// random bytes (randomBody of its number): it does not compress, so a
// 64 KiB span size gives each file spans of its own.
func randomLayer(t *testing.T, files, size int) []byte {
	t.Helper()
	fs := make([]ztoctest.File, files)
	for i := range fs {
		fs[i] = ztoctest.File{Name: fmt.Sprintf("r%d", i), Mode: 0o644, Body: randomBody(uint64(i), size)}
	}
	return ztoctest.Layer(t, fs, ztoctest.LayerOptions{Gzip: true})
}
