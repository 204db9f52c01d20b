package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/log/logtest"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"oras.land/oras-go/v2"

	"github.com/ociseek/ociseek/config"
	"github.com/ociseek/ociseek/fs"
	"github.com/ociseek/ociseek/internal/hosts/hoststest"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/snapshot"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// mirrorSite is an indexed one-layer image on an upstream registry and,
// copied with its SOCI index, on a mirror; each behind a counting proxy,
// with a config_path whose hosts.toml sends the upstream to the mirror for
// pull and resolve.
type mirrorSite struct {
	upP, mirP *hoststest.Proxy
	dir       string
	labels    map[string]string // the layer's, as containerd sends them
}

func newMirrorSite(ctx context.Context, t *testing.T, blob []byte) *mirrorSite {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: FUSE and overlay mounts")
	}
	up := regtest.Start(t, regtest.KindDistribution)
	mirror := regtest.Start(t, regtest.KindDistribution)
	img := pushIndexedImage(ctx, t, up, blob)
	if _, err := oras.ExtendedCopy(ctx, up.Repository(t, "app"), "latest", mirror.Repository(t, "app"), "latest", oras.DefaultExtendedCopyOptions); err != nil {
		t.Fatalf("copy the image and its index to the mirror: %v", err)
	}
	s := &mirrorSite{dir: t.TempDir()}
	s.upP = hoststest.StartProxy(t, up.Host, hoststest.ProxyOptions{})
	s.mirP = hoststest.StartProxy(t, mirror.Host, hoststest.ProxyOptions{})
	hoststest.WriteHosts(t, s.dir, s.upP.Host, `
[host."http://`+s.mirP.Host+`"]
  capabilities = ["pull", "resolve"]
`)
	s.labels = map[string]string{
		snapshots.LabelSnapshotRef: "layer",
		fs.LabelImageRef:           s.upP.Host + "/app:latest",
		fs.LabelManifestDigest:     img.Digest.String(),
		fs.LabelLayerDigest:        digest.FromBytes(blob).String(),
	}
	return s
}

// prepare starts a daemon with config_path set to the site's, changed by
// tweak, and prepares the layer; the daemon stops when the test ends.
func (s *mirrorSite) prepare(ctx context.Context, t *testing.T, tweak func(*config.Config)) (root string, layer snapshots.Info) {
	t.Helper()
	cfg := config.Default()
	cfg.Daemon.Root = t.TempDir()
	cfg.Registry.DockerConfig = filepath.Join(t.TempDir(), "config.json")
	cfg.Registry.ConfigPath = s.dir
	cfg.BackgroundFetch.Enable = false
	tweak(cfg)
	svc, err := newService(ctx, cfg, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.shutdown(ctx, true) })
	_, _ = svc.sn.Prepare(ctx, "extract-1 layer", "", snapshots.WithLabels(s.labels))
	info, err := svc.sn.Stat(ctx, "layer")
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Daemon.Root, info
}

// TestDaemonUsesMirror: the daemon, with [registry] config_path naming a
// hosts.toml that sends the image's registry to a mirror holding a copy
// of the image and its SOCI index, mounts the layer lazily (discovery,
// zTOC and the blob probe) and, with a zTOC over the size bound, unpacks
// it itself, all from the mirror: the upstream sees only the referrers API
// probe, a capability the mirror is not given.
func TestDaemonUsesMirror(t *testing.T) {
	ctx := logtest.WithT(context.Background(), t)
	blob, _ := testLayer(t)
	s := newMirrorSite(ctx, t, blob)
	for _, tc := range []struct {
		name    string
		maxZtoc int64
		want    snapshot.Outcome
	}{
		{"lazy", 0, snapshot.OutcomeLazy},
		{"local unpack", 1, snapshot.OutcomeLocalUnpack},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.mirP.Bytes()
			_, info := s.prepare(ctx, t, func(cfg *config.Config) {
				if tc.maxZtoc != 0 {
					cfg.Discovery.MaxZtocBytes = tc.maxZtoc
				}
			})
			if got := snapshot.Outcome(info.Labels[snapshot.LabelDecision]); got != tc.want {
				t.Fatalf("outcome %s (%s), want %s", got, info.Labels[snapshot.LabelDecisionReason], tc.want)
			}
			for _, r := range s.upP.Requests() {
				// The referrers API needs the "referrers" capability,
				// which this mirror's list leaves out (as containerd
				// reads it): that probe, and only it, goes upstream.
				if !strings.Contains(r.Path, "/referrers/") {
					t.Errorf("upstream asked %s %s", r.Method, r.Path)
				}
			}
			got := s.mirP.Bytes() - before
			if tc.want == snapshot.OutcomeLocalUnpack && got < int64(len(blob)) {
				t.Errorf("mirror sent %d bytes, less than the %d-byte layer", got, len(blob))
			}
			t.Logf("%s: mirror sent %d bytes, upstream %d", tc.name, got, s.upP.Bytes())
		})
	}
}

// TestDaemonReadFallsOverMidRead: a lazy layer is mounted from a mirror,
// which goes down after sending 1 MiB of a 6 MiB file being read through
// the FUSE mount; the read returns the whole file, no error, the rest
// coming from the upstream.
func TestDaemonReadFallsOverMidRead(t *testing.T) {
	ctx := logtest.WithT(context.Background(), t)
	body := make([]byte, 6<<20)
	if _, err := rand.Read(body); err != nil {
		t.Fatal(err)
	}
	blob := ztoctest.Layer(t, []ztoctest.File{{Name: "big", Mode: 0o644, Body: body}}, ztoctest.LayerOptions{Gzip: true})
	s := newMirrorSite(ctx, t, blob)
	root, _ := s.prepare(ctx, t, func(*config.Config) {})
	files, _ := filepath.Glob(filepath.Join(root, "snapshotter", "snapshots", "*", "fs", "big"))
	if len(files) != 1 {
		t.Fatalf("lazy layer's file: %v", files)
	}
	upBefore := s.upP.Bytes()
	s.mirP.SetDieAfter(1 << 20)
	got, err := os.ReadFile(files[0])
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read through FUSE: %d bytes, %v", len(got), err)
	}
	fromUp := s.upP.Bytes() - upBefore
	if fromUp < int64(len(blob))/2 {
		t.Errorf("upstream sent %d bytes after the mirror went down, of a %d-byte layer", fromUp, len(blob))
	}
	t.Logf("mirror sent 1 MiB of the read and went down; upstream sent %d bytes; layer %d bytes", fromUp, len(blob))
}
