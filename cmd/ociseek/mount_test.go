package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/internal/regtest"
)

// runMountVerb runs "ociseek mount args..." in-process until ctx ends and
// returns its stdout and error on the channel.
func runMountVerb(ctx context.Context, args ...string) (<-chan error, *bytes.Buffer) {
	var out, errb bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- dispatch(ctx, "ociseek", []command{mountCommand()}, append([]string{"mount"}, args...), &out, &errb)
	}()
	return done, &out
}

func isMountpoint(t *testing.T, dir string) bool {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	return len(ms) > 0
}

// TestMountVerb indexes an image with "ociseek create", mounts its second
// layer with "ociseek mount", reads a file through the mountpoint, then
// interrupts the verb and checks the layer is unmounted.
func TestMountVerb(t *testing.T) {
	reg := regtest.Start(t, regtest.KindDistribution)
	layers := [][]byte{testLayer(t, 1), testLayer(t, 2)}
	reg.PushImage(t, "mnt", layers, nil)
	ref := reg.Ref("mnt", "latest")
	if _, _, err := runRegistryCLI(t, "create", "--span-size", "65536", "--min-layer-size", "0", ref); err != nil {
		t.Fatalf("create: %v", err)
	}
	mp := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done, out := runMountVerb(ctx, "--plain-http", ref, digest.FromBytes(layers[1]).String(), mp)

	want := strings.Repeat("seed 2 file 3\n", 4000)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := os.ReadFile(filepath.Join(mp, "f3"))
		if err == nil {
			if string(got) != want {
				t.Fatalf("f3 through the mount: %d bytes that differ from the layer's", len(got))
			}
			break
		}
		select {
		case err := <-done:
			t.Fatalf("mount verb ended before serving: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("f3 not readable through the mount after 30s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	checkMountOptions(t, mp, false)

	stopMountVerb(t, cancel, done)
	if isMountpoint(t, mp) {
		t.Fatal("layer still mounted after the verb returned")
	}
	if s := out.String(); !strings.Contains(s, "mounted sha256:") || !strings.Contains(s, "unmounted "+mp) {
		t.Errorf("output %q does not report the mount and the unmount", s)
	}
}

// checkMountOptions fails unless the mount at mp is nosuid and nodev (a
// setuid-root file of the layer must not give its runner root), and has
// allow_other exactly when allowOther.
func checkMountOptions(t *testing.T, mp string, allowOther bool) {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(mp))
	if err != nil || len(ms) != 1 {
		t.Fatalf("mountinfo of %s: %v, %v", mp, ms, err)
	}
	opts := strings.Split(ms[0].Options, ",")
	for _, want := range []string{"ro", "nosuid", "nodev"} {
		if !slices.Contains(opts, want) {
			t.Errorf("mount options %q lack %s", ms[0].Options, want)
		}
	}
	if got := slices.Contains(strings.Split(ms[0].VFSOptions, ","), "allow_other"); got != allowOther {
		t.Errorf("super options %q: allow_other is %v, want %v", ms[0].VFSOptions, got, allowOther)
	}
}

// TestMountVerbAllowOther: --allow-other lets other users in, and the
// mount stays nosuid and nodev.
func TestMountVerbAllowOther(t *testing.T) {
	reg := regtest.Start(t, regtest.KindDistribution)
	layers := [][]byte{testLayer(t, 4)}
	reg.PushImage(t, "mnt", layers, nil)
	ref := reg.Ref("mnt", "latest")
	if _, _, err := runRegistryCLI(t, "create", "--span-size", "65536", "--min-layer-size", "0", ref); err != nil {
		t.Fatalf("create: %v", err)
	}
	mp := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done, _ := runMountVerb(ctx, "--plain-http", "--allow-other", ref, digest.FromBytes(layers[0]).String(), mp)
	deadline := time.Now().Add(30 * time.Second)
	for !isMountpoint(t, mp) {
		select {
		case err := <-done:
			t.Fatalf("mount verb ended before serving: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("not mounted after 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	checkMountOptions(t, mp, true)
	stopMountVerb(t, cancel, done)
}

// TestMountVerbErrors: a layer the image does not have, and an image
// without an index, fail with errors saying so, and mount nothing.
func TestMountVerbErrors(t *testing.T) {
	reg := regtest.Start(t, regtest.KindDistribution)
	layer := testLayer(t, 3)
	reg.PushImage(t, "noindex", [][]byte{layer}, nil)
	ref := reg.Ref("noindex", "latest")
	cases := []struct {
		name   string
		args   []string
		check  func(error) bool
		expect string
	}{
		{"not a layer", []string{ref, digest.FromString("other").String()},
			func(err error) bool { return err != nil && strings.Contains(err.Error(), "is not a layer of") }, "'is not a layer of'"},
		{"no index", []string{ref, digest.FromBytes(layer).String()},
			func(err error) bool { return errors.Is(err, index.ErrNoIndex) }, "index.ErrNoIndex"},
		{"bad digest", []string{ref, "sha256:nothex"},
			isUsage, "a usage error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mp := t.TempDir()
			done, _ := runMountVerb(context.Background(), append(tc.args, mp)...)
			select {
			case err := <-done:
				if !tc.check(err) {
					t.Fatalf("mount: %v, want %s", err, tc.expect)
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("mount %v did not fail", tc.args)
			}
			if isMountpoint(t, mp) {
				t.Fatal("failed mount left a mount")
			}
		})
	}
}

// stopMountVerb interrupts a running mount verb (cancel) and waits for it
// to return without an error, as ^C would.
func stopMountVerb(t *testing.T, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("mount verb after interrupt: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("mount verb did not return after interrupt")
	}
}
