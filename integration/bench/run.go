package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/integration/harness"
	"github.com/ociseek/ociseek/snapshot"
)

// Measure is what one run of one snapshotter measured.
type Measure struct {
	// Link and Snapshotter name the run.
	Link, Snapshotter string
	// FirstOutput is pull + run until `cat /data/hello.txt` printed (a).
	FirstOutput time.Duration
	// Fetched is the registry's blob bytes until then (b).
	Fetched int64
	// Read is the 128 MiB read in a new container (c); ReadFetched the
	// blob bytes served meanwhile.
	Read        time.Duration
	ReadFetched int64
	// Complete is when the image was complete on local disk, from the
	// start of the pull (d); 0: unknown, and Incomplete when the wait
	// timed out.
	Complete   time.Duration
	Incomplete bool
	// Find is `find / -xdev | wc -l` in a new container, FindEntries what
	// it counted; Small is cat of the 2,000 small files.
	Find        time.Duration
	FindEntries int
	Small       time.Duration
	// OutsideClock counts the workloads (c, find, small) timed by the
	// arrival of their output rather than by the container's clock.
	OutsideClock int
	// Failures are the errors of workload containers that failed and
	// were started again.
	Failures []string
	// PeakRSS is the snapshotter process's VmHWM in bytes after the whole
	// sequence (0: not a process of the run).
	PeakRSS int64
	// Timeline is where the time to the first output went, when the
	// snapshotter recorded its timings.
	Timeline []Step
	// Explain is `ociseek explain --timings` after the run (ociseek only).
	Explain string
}

// Layers names the image's layers for the timeline: digests and chain IDs
// of the base and data layer.
type Layers struct {
	Base, Data           digest.Digest
	BaseChain, DataChain digest.Digest
	// DataSize is the data layer blob's size.
	DataSize int64
}

// Runner runs the benchmark's runs.
type Runner struct {
	// Cfg are the settings.
	Cfg Config
	// Tools are the binaries (containerd, ctr, ociseek); Nerdctl the
	// client's.
	Tools   harness.Tools
	Nerdctl string
	// Img is the image's shape, Layers its layers.
	Img    Image
	Layers Layers
	// Logf reports progress.
	Logf func(format string, args ...any)
}

// Target is the image as one link reaches it.
type Target struct {
	// Link is the link's name.
	Link string
	// Proxy counts what the registry serves over this link.
	Proxy *harness.CountingProxy
	// Ref is the image reference through Proxy.
	Ref string
}

// commandTimeout bounds one client command.
const commandTimeout = 10 * time.Minute

// RunOnce starts the image on a fresh containerd (and snapshotter) with
// snapshotter sn and measures it; everything it started is stopped before
// it returns.
func (r *Runner) RunOnce(ctx context.Context, tg Target, sn string) (m Measure, err error) {
	m = Measure{Link: tg.Link, Snapshotter: sn}
	dir, err := os.MkdirTemp("/tmp", "osb-")
	if err != nil {
		return m, fmt.Errorf("run directory: %w", err)
	}
	var defers []func()
	failed := false
	s := harness.Scope{
		Defer:  func(f func()) { defers = append(defers, f) },
		Logf:   r.Logf,
		Failed: func() bool { return failed },
	}
	defer func() {
		failed = err != nil
		for i := len(defers) - 1; i >= 0; i-- {
			defers[i]()
		}
		if mounts, merr := harness.MountsUnder(dir); merr == nil && len(mounts) == 0 && !failed {
			_ = os.RemoveAll(dir)
		}
	}()
	snap, err := r.startSnapshotter(s, dir, sn)
	if err != nil {
		return m, err
	}
	copts := harness.ContainerdOptions{SociSocket: snap.addr, SociRoot: snap.root}
	c, err := harness.StartContainerdIn(s, r.Tools, filepath.Join(dir, "c"), copts)
	if err != nil {
		return m, err
	}
	if err := dropCaches(); err != nil {
		return m, err
	}
	client := &nerdctl{bin: r.Nerdctl, c: c, dir: filepath.Join(dir, "nerdctl"), snapshotter: "soci"}
	if sn == Overlay {
		client.snapshotter = "overlayfs"
	}

	tg.Proxy.Reset()
	t0 := time.Now()
	watch := r.watchComplete(ctx, snap.daemon, t0)
	var firstAt time.Time
	out, err := client.run(ctx, func(l outLine) {
		if firstAt.IsZero() {
			firstAt, m.Fetched = l.at, tg.Proxy.BlobBytes()
		}
	}, "--insecure-registry", tg.Ref)
	if err != nil {
		return m, err
	}
	if len(out) != 1 || out[0].text+"\n" != harness.HelloContent {
		return m, fmt.Errorf("%s: the container printed %q, want %q", sn, texts(out), harness.HelloContent)
	}
	m.FirstOutput = firstAt.Sub(t0)
	firstReadGets := tg.Proxy.Gets()
	r.logGets(sn, t0, firstReadGets)

	before := tg.Proxy.BlobBytes()
	if m.Read, _, err = client.workload(ctx, tg.Ref, "sha256sum "+strings.Join(r.Img.ReadFiles, " ")+" > /dev/null"); err != nil {
		return m, err
	}
	m.ReadFetched = tg.Proxy.BlobBytes() - before
	var found []string
	if m.Find, found, err = client.workload(ctx, tg.Ref, "find / -xdev | wc -l"); err != nil {
		return m, err
	}
	if len(found) == 1 {
		m.FindEntries, _ = strconv.Atoi(strings.TrimSpace(found[0]))
	}
	if m.Small, _, err = client.workload(ctx, tg.Ref, "cat /data/small/d00[0-9]/* > /dev/null"); err != nil {
		return m, err
	}

	m.OutsideClock, m.Failures = client.outsideClock, client.failures
	switch {
	case sn == Overlay:
		m.Complete = m.FirstOutput // a full pull: complete before the container starts
	case watch != nil:
		m.Complete, m.Incomplete = watch.wait(r.Cfg.CompleteTimeout)
	}
	if snap.pid != 0 {
		m.PeakRSS = peakRSS(snap.pid)
	}
	if sn != Overlay {
		m.Timeline = r.timeline(ctx, c, t0, firstAt, firstReadGets)
	}
	if sn == Ociseek {
		m.Explain, _ = harness.Run(ctx, time.Minute, r.Tools.Ociseek, "explain", "--address", c.Address,
			"--namespace", harness.Namespace, "--snapshotter", "soci", "--root", snap.root, "--timings", tg.Ref)
	}
	return m, nil
}

// logGets logs the blob GETs of a start: the registry's view of it.
func (r *Runner) logGets(sn string, t0 time.Time, gets []*harness.BlobGet) {
	var b strings.Builder
	for i, g := range gets {
		if i == 40 {
			fmt.Fprintf(&b, "\n  ... %d more", len(gets)-i)
			break
		}
		what := g.Digest
		switch g.Digest {
		case r.Layers.Base.String():
			what = "base layer"
		case r.Layers.Data.String():
			what = "data layer"
		}
		rng := g.Range
		if rng == "" {
			rng = "whole"
		}
		fmt.Fprintf(&b, "\n  %+.3f s to %+.3f s: %s (%s) %d bytes by %q", g.Start.Sub(t0).Seconds(), g.End().Sub(t0).Seconds(),
			what, rng, g.Bytes(), g.UserAgent)
	}
	r.Logf("%s: blob GETs until the first output:%s", sn, b.String())
}

// snapshotterProc is the proxy snapshotter of a run: its socket and root
// for containerd, its PID for the memory figure, and the daemon when it
// is ociseek's.
type snapshotterProc struct {
	addr, root string
	pid        int
	daemon     *harness.Daemon
}

// startSnapshotter starts the snapshotter sn of a run under dir (none for
// overlayfs, which is containerd's own).
func (r *Runner) startSnapshotter(s harness.Scope, dir, sn string) (snapshotterProc, error) {
	switch {
	case sn == Overlay:
		return snapshotterProc{}, nil
	case sn == Ociseek:
		// The daemon's defaults, background completion included, as a node
		// runs it.
		d, err := harness.StartDaemonIn(s, r.Tools, filepath.Join(dir, "d"), harness.DaemonOptions{BackgroundFetch: true})
		if err != nil {
			return snapshotterProc{}, err
		}
		return snapshotterProc{addr: d.Address, root: d.Root, pid: d.PID(), daemon: d}, nil
	}
	o := r.Cfg.Other
	if o.Bin == "" {
		return snapshotterProc{addr: o.Addr, root: o.Root}, nil
	}
	odir := filepath.Join(dir, "o")
	p := snapshotterProc{addr: filepath.Join(odir, "snapshotter.sock"), root: filepath.Join(odir, "root")}
	if err := os.MkdirAll(p.root, 0o700); err != nil {
		return p, fmt.Errorf("%s directory: %w", o.Name, err)
	}
	args := make([]string, len(o.Args))
	for i, a := range o.Args {
		args[i] = strings.NewReplacer("{address}", p.addr, "{root}", p.root, "{dir}", odir).Replace(a)
	}
	proc, err := harness.StartProcess(o.Name, filepath.Join(odir, "snapshotter.log"), o.Bin, args, nil)
	if err != nil {
		return p, err
	}
	s.Defer(func() {
		if err := proc.Stop(syscall.SIGINT); err != nil {
			s.Logf("stop %s: %v", o.Name, err)
		}
		if err := harness.UnmountAll(odir); err != nil {
			s.Logf("unmount %s leftovers: %v", o.Name, err)
		}
	})
	p.pid = proc.PID()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(p.addr); err == nil {
			return p, nil
		}
		if proc.Exited() || time.Now().After(deadline) {
			return p, fmt.Errorf("%s did not create its socket %s; log:\n%s", o.Name, p.addr, proc.Tail(3000))
		}
	}
}

// dropCaches writes back and drops the page cache, dentries and inodes,
// so every run reads cold.
func dropCaches() error {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
		return fmt.Errorf("drop caches (needs root): %w", err)
	}
	return nil
}

// peakRSS returns the VmHWM of process pid in bytes (0 when unreadable).
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// completion polls the daemon's metrics for the moment every mounted lazy
// layer is verified, i.e. complete on disk.
type completion struct {
	done   chan struct{}
	at     time.Duration
	cancel context.CancelFunc
}

// watchComplete starts polling d (nil: nothing to watch) from t0.
func (r *Runner) watchComplete(ctx context.Context, d *harness.Daemon, t0 time.Time) *completion {
	if d == nil {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &completion{done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(w.done)
		for {
			mounted, err1 := d.Metric("ociseek_fs_layers_mounted")
			unverified, err2 := d.Metric("ociseek_fs_layers_unverified")
			if err1 == nil && err2 == nil && mounted > 0 && unverified == 0 {
				w.at = time.Since(t0)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return w
}

// wait waits up to timeout for completion; it returns the time from t0,
// or the time waited and true when it did not come.
func (w *completion) wait(timeout time.Duration) (time.Duration, bool) {
	defer w.cancel()
	select {
	case <-w.done:
		return w.at, w.at == 0
	case <-time.After(timeout):
		w.cancel()
		<-w.done
		return timeout, true
	}
}

// outLine is one line a container printed and when it arrived.
type outLine struct {
	text string
	at   time.Time
}

func texts(ls []outLine) string {
	var b strings.Builder
	for _, l := range ls {
		b.WriteString(l.text + "\n")
	}
	return b.String()
}

// nerdctl runs containers with nerdctl against one containerd.
type nerdctl struct {
	bin, dir, snapshotter string
	c                     *harness.Containerd
	// outsideClock counts the workloads timed by their output's arrival
	// because the container could not read the clock.
	outsideClock int
	// failures are the errors of workload containers that failed once.
	failures []string
}

// firstLine returns s up to its first newline, at most 300 bytes.
func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// run runs `nerdctl run --rm --net host ARGS` and returns the lines the
// container printed with their arrival times, calling each for every line
// as it arrives.
func (n *nerdctl) run(ctx context.Context, each func(outLine), args ...string) ([]outLine, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	full := append([]string{"--address", n.c.Address, "--namespace", harness.Namespace,
		"--data-root", n.dir, "--snapshotter", n.snapshotter, "run", "--rm", "--net", "host"}, args...)
	cmd := exec.CommandContext(ctx, n.bin, full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("nerdctl: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start nerdctl: %w", err)
	}
	var lines []outLine
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		l := outLine{text: sc.Text(), at: time.Now()}
		if each != nil {
			each(l)
		}
		lines = append(lines, l)
	}
	if err := cmd.Wait(); err != nil {
		return lines, fmt.Errorf("nerdctl %s: %w\n%s%s", strings.Join(args, " "), err, texts(lines), stderr.String())
	}
	return lines, nil
}

// Markers the workload containers print around the measured command.
const (
	markStart = "bench-start"
	markEnd   = "bench-end"
)

// clockProbe prints the kernel's clock in microseconds inside a container
// (busybox has no date +%N; adjtimex only reads when given no options, and
// needs no privilege).
const clockProbe = "/bin/busybox adjtimex 2>/dev/null | /bin/busybox grep time.tv_"

// workload runs script in a new container of ref and returns how long it
// took, measured inside the container by the kernel clock around it (the
// arrival times of marker lines, when the clock cannot be read there), and
// what it printed: the container's start is not counted, nor the delay of
// its output on a loaded machine.
func (n *nerdctl) workload(ctx context.Context, ref, script string) (time.Duration, []string, error) {
	d, between, inside, err := n.timedWorkload(ctx, ref, script)
	if err != nil {
		// A container that does not start is what a user would see, so
		// it is reported; the run goes on with a second try.
		n.failures = append(n.failures, firstLine(err.Error()))
		time.Sleep(2 * time.Second)
		d, between, inside, err = n.timedWorkload(ctx, ref, script)
	}
	if err == nil && !inside {
		n.outsideClock++
	}
	return d, between, err
}

// timedWorkload is workload, also saying whether the time came from the
// container's clock.
func (n *nerdctl) timedWorkload(ctx context.Context, ref, script string) (time.Duration, []string, bool, error) {
	full := "echo " + markStart + "; " + clockProbe + "; " + script + "; " + clockProbe + "; echo " + markEnd
	lines, err := n.run(ctx, nil, ref, "/bin/sh", "-c", full)
	if err != nil {
		return 0, nil, false, err
	}
	if len(lines) < 2 || lines[0].text != markStart || lines[len(lines)-1].text != markEnd {
		return 0, nil, false, fmt.Errorf("workload %q printed %q, want it between %s and %s", script, texts(lines), markStart, markEnd)
	}
	var between []string
	var clock []int64 // tv_sec, tv_usec pairs
	for _, l := range lines[1 : len(lines)-1] {
		if k, v, ok := strings.Cut(l.text, ":"); ok && strings.HasPrefix(strings.TrimSpace(k), "time.tv_") {
			if us, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				clock = append(clock, us)
				continue
			}
		}
		between = append(between, l.text)
	}
	if len(clock) == 4 {
		return time.Duration((clock[2]-clock[0])*1e6+clock[3]-clock[1]) * time.Microsecond, between, true, nil
	}
	return lines[len(lines)-1].at.Sub(lines[0].at), between, false, nil
}

// layerTimings returns the timings label of snapshot key on the proxy
// snapshotter, or false when it has none.
func layerTimings(ctx context.Context, c *harness.Containerd, key digest.Digest) (snapshot.Timings, bool) {
	out, err := c.Ctr(ctx, "snapshots", "--snapshotter", "soci", "info", key.String())
	if err != nil {
		return snapshot.Timings{}, false
	}
	var info struct{ Labels map[string]string }
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		return snapshot.Timings{}, false
	}
	v, ok := info.Labels[snapshot.LabelTimings]
	if !ok {
		return snapshot.Timings{}, false
	}
	tm, err := snapshot.ParseTimings(v)
	return tm, err == nil
}
