package unpack

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/log/logtest"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/ociseek/ociseek/internal/regtest"
)

// tarOf returns a tar of entries (name → body; a name ending in "/" is a
// directory), in order.
func tarOf(t *testing.T, entries ...string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for i := 0; i < len(entries); i += 2 {
		h := &tar.Header{Name: entries[i], Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(entries[i+1]))}
		if strings.HasSuffix(h.Name, "/") {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(entries[i+1]))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// testLayer is a gzip layer with a file, a whiteout and an opaque
// directory, and its diffID.
func testLayer(t *testing.T) (blob []byte, diffID digest.Digest) {
	tb := tarOf(t, "etc/", "", "etc/hello", "hello from the registry", "etc/.wh.gone", "",
		"opaque/", "", "opaque/.wh..wh..opq", "")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tb)
	zw.Close()
	return gz.Bytes(), digest.FromBytes(tb)
}

// pushLayer pushes blob to repository "app" of a fresh registry and returns
// the labels of an unpack Prepare for it, with diffID as the diffID label.
func pushLayer(t *testing.T, blob []byte, diffID digest.Digest) map[string]string {
	reg := regtest.Start(t, regtest.KindDistribution)
	desc := reg.PushBlob(t, "app", blob, "application/vnd.oci.image.layer.v1.tar+gzip")
	return map[string]string{
		snapshotters.TargetRefLabel:         reg.Host + "/app:latest",
		snapshotters.TargetLayerDigestLabel: desc.Digest.String(),
		snapshots.LabelSnapshotDiffID:       diffID.String(),
		snapshots.LabelSnapshotRef:          "layer",
	}
}

// testUnpacker talks plain HTTP to every host, as the test registries
// serve it.
func testUnpacker() *Unpacker {
	return New(&auth.Client{Cache: auth.NewCache()}, func(string) bool { return true })
}

func TestUnpackLayerFromRegistry(t *testing.T) {
	blob, diffID := testLayer(t)
	labels := pushLayer(t, blob, diffID)
	dir := t.TempDir()
	ctx := logtest.WithT(context.Background(), t)
	if err := testUnpacker().Unpack(ctx, dir, labels); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "etc/hello")); err != nil || string(b) != "hello from the registry" {
		t.Errorf("etc/hello = %q, %v", b, err)
	}
	// Whiteouts are in overlay's form: a 0:0 character device.
	st, err := os.Lstat(filepath.Join(dir, "etc/gone"))
	if err != nil || st.Mode()&os.ModeCharDevice == 0 || st.Sys().(*syscall.Stat_t).Rdev != 0 {
		t.Errorf("whiteout etc/gone = %v, %v", st, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "etc/.wh.gone")); !os.IsNotExist(err) {
		t.Errorf("whiteout file unpacked as is: %v", err)
	}
	if _, err := os.Lstat(dir + stagingSuffix); !os.IsNotExist(err) {
		t.Errorf("staging directory left after a good unpack: %v", err)
	}
}

func TestUnpackRejectsBadInput(t *testing.T) {
	blob, diffID := testLayer(t)
	labels := pushLayer(t, blob, diffID)
	ctx := logtest.WithT(context.Background(), t)
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for k, v := range labels {
			m[k] = v
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	cases := map[string]struct {
		labels map[string]string
		want   string
	}{
		"wrong diffID":      {with(snapshots.LabelSnapshotDiffID, digest.FromString("other").String()), "image config says"},
		"no diffID":         {with(snapshots.LabelSnapshotDiffID, ""), snapshots.LabelSnapshotDiffID},
		"no image ref":      {with(snapshotters.TargetRefLabel, ""), snapshotters.TargetRefLabel},
		"malformed digest":  {with(snapshotters.TargetLayerDigestLabel, "sha256:xyz"), snapshotters.TargetLayerDigestLabel},
		"layer not in repo": {with(snapshotters.TargetLayerDigestLabel, digest.FromString("absent").String()), "resolve layer"},
		"unreachable host":  {with(snapshotters.TargetRefLabel, "127.0.0.1:1/app:latest"), "resolve layer"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			err := testUnpacker().Unpack(ctx, dir, c.labels)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Unpack = %v, want error mentioning %q", err, c.want)
			}
			assertUntouched(t, dir)
		})
	}
}

// TestRefusedLayerLeavesNoTrace: a tar that marks its root opaque and does
// not hash to its diffID is refused, and the snapshot directory is as it
// was, without trusted.overlay.opaque (which would hide every lower layer
// once committed). The staging directory an interrupted earlier attempt
// left is cleared too.
func TestRefusedLayerLeavesNoTrace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: trusted.* xattrs")
	}
	tb := tarOf(t, ".wh..wh..opq", "", "planted", "from a layer that lies about its diffID")
	labels := pushLayer(t, tb, digest.FromString("some other tar"))
	ctx := logtest.WithT(context.Background(), t)
	dir := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Leftovers of an attempt killed half-way.
	if err := os.MkdirAll(filepath.Join(dir+stagingSuffix, "half"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := testUnpacker().Unpack(ctx, dir, labels)
	if err == nil || !strings.Contains(err.Error(), "image config says") {
		t.Fatalf("Unpack = %v, want the diffID mismatch", err)
	}
	assertUntouched(t, dir)
	if _, err := os.Lstat(dir + stagingSuffix); !os.IsNotExist(err) {
		t.Errorf("staging directory left after a refused unpack: %v", err)
	}

	// The same tar with its true diffID is unpacked, opaque root included.
	labels[snapshots.LabelSnapshotDiffID] = digest.FromBytes(tb).String()
	if err := testUnpacker().Unpack(ctx, dir, labels); err != nil {
		t.Fatal(err)
	}
	if v, err := getxattr(dir, "trusted.overlay.opaque"); err != nil || v != "y" {
		t.Errorf("trusted.overlay.opaque of a good opaque layer = %q, %v; want y", v, err)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("snapshot directory after unpack: %v, %v; want mode 0755", st, err)
	}
}

// assertUntouched fails if dir has entries or an overlay opaque xattr.
func assertUntouched(t *testing.T, dir string) {
	t.Helper()
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("snapshot directory after a refused unpack: %v, %v; want it empty", entries, err)
	}
	for _, name := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
		if v, err := getxattr(dir, name); err == nil {
			t.Errorf("snapshot directory has %s=%q after a refused unpack", name, v)
		}
	}
}

func getxattr(path, name string) (string, error) {
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(path, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}
