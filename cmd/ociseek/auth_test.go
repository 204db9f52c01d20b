package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/ociseek/ociseek/internal/regtest"
)

// TestRegistryAuth drives the registry verbs against a registry that
// demands a user and password: with --user, with a docker config file,
// without credentials and with a wrong password. Failures must say which
// registry refused and why, after a request or two (no retries of a
// refusal).
func TestRegistryAuth(t *testing.T) {
	// No credentials unless a case writes some: the machine's own
	// ~/.docker must not leak in.
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	reg := regtest.StartWithAuth(t, "alice", "s3cret")
	reg.PushImage(t, "app", [][]byte{testLayer(t, 1)}, nil)
	ref := reg.Ref("app", "latest")
	create := []string{"create", "--span-size", "65536", "--min-layer-size", "0"}

	// runCounted runs the verb and returns its error and how many requests
	// the registry saw.
	runCounted := func(args ...string) (string, error, int) {
		t.Helper()
		before := len(reg.Requests(t))
		out, _, err := runRegistryCLI(t, args...)
		return out, err, len(reg.Requests(t)) - before
	}

	t.Run("no credentials", func(t *testing.T) {
		for _, args := range [][]string{append(create, ref), {"index", "ls", ref}} {
			_, err, n := runCounted(args...)
			wantAuthError(t, args[0], err, reg.Host, "has none for it", "--user USER:PASSWORD")
			if n > 1 {
				t.Errorf("%s sent %d requests after the challenge said credentials were needed, want 1", args[0], n)
			}
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		_, err, n := runCounted(append(append(create, "--user", "alice:wrong"), ref)...)
		wantAuthError(t, "create", err, reg.Host, "refused the user and password from --user")
		// The challenge, then one attempt with credentials.
		if n > 2 {
			t.Errorf("create with a wrong password sent %d requests, want ≤ 2", n)
		}
	})
	t.Run("user flag", func(t *testing.T) {
		out, err, _ := runCounted(append(append(create, "--user", "alice:s3cret"), ref)...)
		if err != nil {
			t.Fatalf("create --user: %v", err)
		}
		idx, _, _ := strings.Cut(out, "\t")
		out, err, _ = runCounted("index", "ls", "--user", "alice:s3cret", ref)
		if err != nil || !strings.Contains(out, idx) {
			t.Fatalf("index ls --user = %q, %v; want it to list %s", out, err, idx)
		}
	})
	t.Run("docker config", func(t *testing.T) {
		t.Setenv("DOCKER_CONFIG", reg.WriteDockerConfig(t, t.TempDir(), "alice", "s3cret"))
		out, err, _ := runCounted(append(create, ref)...)
		if err != nil {
			t.Fatalf("create with docker config credentials: %v", err)
		}
		idx, _, _ := strings.Cut(out, "\t")
		out, err, _ = runCounted("index", "ls", ref)
		if err != nil || !strings.Contains(out, idx) {
			t.Fatalf("index ls = %q, %v; want it to list %s", out, err, idx)
		}
	})
	t.Run("docker config wrong password", func(t *testing.T) {
		t.Setenv("DOCKER_CONFIG", reg.WriteDockerConfig(t, t.TempDir(), "alice", "wrong"))
		_, err, n := runCounted("index", "ls", ref)
		wantAuthError(t, "index ls", err, reg.Host, "refused the user and password from the docker config file")
		if n > 2 {
			t.Errorf("index ls with a wrong password sent %d requests, want ≤ 2", n)
		}
	})
}

// wantAuthError checks err is an authentication failure whose message
// names host and holds each of want.
func wantAuthError(t *testing.T, verb string, err error, host string, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded without valid credentials", verb)
	}
	msg := err.Error()
	if !errors.Is(err, errAuthFailed) || !strings.Contains(msg, "registry "+host+": authentication failed") {
		t.Errorf("%s: %v\nwant an authentication failure naming registry %s", verb, err, host)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("%s: %v\nwant it to say %q", verb, err, w)
		}
	}
	if strings.Contains(msg, "401") {
		t.Errorf("%s: %v\nan HTTP status code is not an explanation", verb, err)
	}
}

// TestMountVerbAuth mounts a layer of an image in a registry that demands
// credentials, found in the docker config file, and reads a file through
// the mount: discovery and the lazy blob reads both authenticate.
func TestMountVerbAuth(t *testing.T) {
	reg := regtest.StartWithAuth(t, "alice", "s3cret")
	t.Setenv("DOCKER_CONFIG", reg.WriteDockerConfig(t, t.TempDir(), "alice", "s3cret"))
	layers := [][]byte{testLayer(t, 1), testLayer(t, 2)}
	reg.PushImage(t, "mnt", layers, nil)
	ref := reg.Ref("mnt", "latest")
	if _, _, err := runRegistryCLI(t, "create", "--span-size", "65536", "--min-layer-size", "0", ref); err != nil {
		t.Fatalf("create: %v", err)
	}
	mp := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done, _ := runMountVerb(ctx, ref, digest.FromBytes(layers[1]).String(), mp)
	readThroughMount(t, done, filepath.Join(mp, "f3"), strings.Repeat("seed 2 file 3\n", 4000))
	var blobGets int
	for _, r := range reg.Requests(t) {
		if r.Method == http.MethodGet && r.Status == http.StatusPartialContent &&
			strings.Contains(r.Path, "/blobs/"+digest.FromBytes(layers[1]).String()) {
			blobGets++
		}
	}
	if blobGets == 0 {
		t.Error("the file was read without an authenticated range request of its layer")
	}
	stopMountVerb(t, cancel, done)

	// Without credentials the mount fails, saying why, and mounts nothing.
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	mp = t.TempDir()
	done, _ = runMountVerb(context.Background(), ref, digest.FromBytes(layers[1]).String(), mp)
	select {
	case err := <-done:
		wantAuthError(t, "mount", err, reg.Host, "has none for it")
	case <-time.After(30 * time.Second):
		t.Fatal("mount without credentials did not fail")
	}
	if isMountpoint(t, mp) {
		t.Fatal("failed mount left a mount")
	}
}

// readThroughMount polls path until it reads want, failing if the mount
// verb ends first or 30 s pass.
func readThroughMount(t *testing.T, done <-chan error, path, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := os.ReadFile(path)
		if err == nil {
			if string(got) != want {
				t.Fatalf("%s through the mount: %d bytes that differ from the layer's", path, len(got))
			}
			return
		}
		select {
		case err := <-done:
			t.Fatalf("mount verb ended before serving: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not readable through the mount after 30s: %v", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMountBlobsDoNotRetryTwice: the client ociseek mount gives fs/remote
// has no retrying transport under it (fs/remote's budget per range is then
// the only one), while the registry client keeps oras's retries.
func TestMountBlobsDoNotRetryTwice(t *testing.T) {
	rf := &registryFlags{user: "u:p"}
	c, err := rf.authClient()
	if err != nil {
		t.Fatal(err)
	}
	blobs := withoutRetries(c)
	ae, ok := blobs.Client.Transport.(authErrors)
	if !ok {
		t.Fatalf("blob transport is %T, want authErrors", blobs.Client.Transport)
	}
	if _, retrying := ae.next.(*retry.Transport); retrying || ae.next == nil {
		t.Errorf("blob transport under authErrors is %T, want a non-retrying one", ae.next)
	}
	if _, retrying := c.Client.Transport.(authErrors).next.(*retry.Transport); !retrying {
		t.Error("the registry client lost its retries")
	}
}
