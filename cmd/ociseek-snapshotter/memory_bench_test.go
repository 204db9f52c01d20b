package main

import (
	"archive/tar"
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/fs"
	"github.com/ociseek/ociseek/index/build"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// memLayer20k is the layer of the memory benchmark: 200 directories of 100
// text-like files of 1–8 KiB, 20,000 files and 20,201 entries, about 92 MB
// of file data, gzip level 6, like a layer of configuration and scripts. It
// returns the layer and the bytes of its files.
func memLayer20k(t testing.TB) (layer []byte, fileBytes int64) {
	words := strings.Fields("the of and to in is that for it as with was on be by at this " +
		"config value service listen port timeout retry path file user group mode error " +
		"return func struct import package string int64 byte slice map channel")
	r := rand.New(rand.NewPCG(20, 1))
	entries := make([]ztoctest.File, 0, 20201)
	entries = append(entries, ztoctest.File{Name: "data/", Type: tar.TypeDir, Mode: 0o755})
	for d := range 200 {
		dir := fmt.Sprintf("data/d%03d/", d)
		entries = append(entries, ztoctest.File{Name: dir, Type: tar.TypeDir, Mode: 0o755})
		for f := range 100 {
			n := 1024 + r.IntN(7*1024)
			var sb strings.Builder
			for sb.Len() < n {
				sb.WriteString(words[r.IntN(len(words))])
				if r.IntN(12) == 0 {
					sb.WriteByte('\n')
				} else {
					sb.WriteByte(' ')
				}
			}
			entries = append(entries, ztoctest.File{Name: fmt.Sprintf("%sf%03d.txt", dir, f),
				Type: tar.TypeReg, Mode: 0o644, Body: []byte(sb.String()[:n])})
			fileBytes += int64(n)
		}
	}
	// Whole seconds, as image builders write them: no PAX record per entry.
	mtime := time.Date(2024, 3, 4, 5, 6, 7, 0, time.UTC)
	return ztoctest.Layer(t, entries, ztoctest.LayerOptions{Gzip: true, ModTime: mtime}), fileBytes
}

// procMemory returns the resident set (VmRSS) and its high-water mark
// (VmHWM) of process pid, in bytes.
func procMemory(t testing.TB, pid int) (rss, hwm int64) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			t.Fatalf("%s in /proc/%d/status: %q", k, pid, v)
		}
		if k == "VmRSS" {
			rss = kib << 10
		} else {
			hwm = kib << 10
		}
	}
	return rss, hwm
}

// readTree reads every regular file under dir in directory order (a
// container's start-up reads, and more) and returns the bytes read.
func readTree(t testing.TB, dir string) int64 {
	t.Helper()
	var total int64
	buf := make([]byte, 128<<10)
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		n, err := io.CopyBuffer(io.Discard, f, buf)
		total += n
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// BenchmarkDaemonMemory20k measures the daemon process (the real binary,
// default configuration) serving one lazily mounted layer of 20k files:
// its resident size right after start (the baseline), with the layer
// mounted and idle, after a walk of the tree, and its peak (VmHWM) while
// every file is read cold through the FUSE mount. The figures the issue
// compares with are the reference snapshotter's 41 MB idle and 92 MB peak.
func BenchmarkDaemonMemory20k(b *testing.B) {
	ctx := context.Background()
	reg := regtest.Start(b, regtest.KindDistribution)
	layer, fileBytes := memLayer20k(b)
	img := reg.PushImage(b, "mem20k", [][]byte{layer}, nil)
	if _, err := build.Create(ctx, reg.Repository(b, "mem20k"), "latest", nil, build.CreateOptions{}); err != nil {
		b.Fatalf("create SOCI index: %v", err)
	}
	labels := map[string]string{
		snapshots.LabelSnapshotRef: "layer",
		fs.LabelImageRef:           reg.Ref("mem20k", "latest"),
		fs.LabelManifestDigest:     img.Digest.String(),
		fs.LabelLayerDigest:        digest.FromBytes(layer).String(),
	}
	var started, idle, walked, peak, after int64
	for b.Loop() {
		d := startDaemon(b, b.TempDir())
		pid := d.cmd.Process.Pid
		rss, _ := procMemory(b, pid)
		started += rss
		sn := d.client(b)
		if _, err := sn.Prepare(ctx, "extract-1 layer", "", snapshots.WithLabels(labels)); !errdefs.IsAlreadyExists(err) {
			b.Fatalf("unpack Prepare = %v, want AlreadyExists (layer served lazily)\n%s", err, d.log)
		}
		mounts, err := sn.View(ctx, "view", "layer")
		if err != nil {
			b.Fatal(err)
		}
		dir := b.TempDir()
		if err := mount.All(mounts, dir); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = mount.UnmountAll(dir, 0) }) // on a failure below
		// Idle: what mounting left behind, once the daemon has returned
		// what the mount used only while mounting (fs.mountSettle, 5 s).
		time.Sleep(6 * time.Second)
		rss, _ = procMemory(b, pid)
		idle += rss
		if _, err := os.ReadDir(filepath.Join(dir, "data")); err != nil {
			b.Fatal(err)
		}
		walkTree(b, dir)
		rss, _ = procMemory(b, pid)
		walked += rss
		if n := readTree(b, dir); n != fileBytes {
			b.Fatalf("read %d bytes through the mount, want the layer's %d", n, fileBytes)
		}
		_, hwm := procMemory(b, pid)
		peak += hwm
		time.Sleep(5 * time.Second)
		rss, _ = procMemory(b, pid)
		after += rss
		if err := mount.UnmountAll(dir, 0); err != nil {
			b.Fatal(err)
		}
		d.stop(b, syscall.SIGINT)
	}
	n := float64(b.N) * 1e6
	b.ReportMetric(float64(started)/n, "start-MB")
	b.ReportMetric(float64(idle)/n, "idle-MB")
	b.ReportMetric(float64(walked)/n, "after-walk-MB")
	b.ReportMetric(float64(peak)/n, "peak-MB")
	b.ReportMetric(float64(after)/n, "5s-after-MB")
	b.ReportMetric(float64(idle)/float64(started), "idle/start")
	b.ReportMetric(float64(peak)/float64(started), "peak/start")
}

// walkTree stats every entry under dir, as find does.
func walkTree(t testing.TB, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		_, err = d.Info()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
