package span

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/fs/cache"
	"github.com/ociseek/ociseek/ztoc"
)

// rangeLog is a BlobReader over bytes in memory that records every range
// asked for and how many were open at once, and can hold back the ones
// block says so until release is closed.
type rangeLog struct {
	data    []byte
	block   func(start, end int64) bool
	release chan struct{}
	// stallFirst makes the first request send 32 KiB, then nothing until
	// its context ends.
	stallFirst bool

	mu      sync.Mutex
	ranges  [][2]int64
	open    int
	maxOpen int
}

func (b *rangeLog) FetchRange(ctx context.Context, start, end int64) (io.ReadCloser, error) {
	b.mu.Lock()
	b.ranges = append(b.ranges, [2]int64{start, end})
	stall := b.stallFirst && len(b.ranges) == 1
	b.open++
	b.maxOpen = max(b.maxOpen, b.open)
	b.mu.Unlock()
	if b.block != nil && b.block(start, end) {
		select {
		case <-b.release:
		case <-ctx.Done():
			b.closed()
			return nil, ctx.Err()
		}
	}
	// Long enough that the parallel requests overlap in time.
	time.Sleep(2 * time.Millisecond)
	if stall {
		r := io.MultiReader(bytes.NewReader(b.data[start:start+32<<10]), stalled{ctx})
		return &logBody{Reader: r, b: b}, nil
	}
	return &logBody{Reader: bytes.NewReader(b.data[start:end]), b: b}, nil
}

func (b *rangeLog) closed() {
	b.mu.Lock()
	b.open--
	b.mu.Unlock()
}

// overlapping returns the ranges that share more than one byte with
// [start, end) (neighbouring spans may share one).
func (b *rangeLog) overlapping(start, end int64) [][2]int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out [][2]int64
	for _, r := range b.ranges {
		if min(r[1], end)-max(r[0], start) > 1 {
			out = append(out, r)
		}
	}
	return out
}

func (b *rangeLog) requests() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.ranges)
}

func (b *rangeLog) bytesAsked() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	var n int64
	for _, r := range b.ranges {
		n += r[1] - r[0]
	}
	return n
}

// stalled is a body that sends nothing more until its request is
// cancelled.
type stalled struct{ ctx context.Context }

func (s stalled) Read([]byte) (int, error) {
	<-s.ctx.Done()
	return 0, s.ctx.Err()
}

type logBody struct {
	io.Reader
	b    *rangeLog
	once sync.Once
}

func (l *logBody) Close() error {
	l.once.Do(l.b.closed)
	return nil
}

// fullSpeedEnv is a layer of many spans in memory, its zTOC and a cache.
type fullSpeedEnv struct {
	layer []byte
	z     *ztoc.Ztoc
	blob  *rangeLog
	cache *cache.Cache
}

func newFullSpeedEnv(t *testing.T) *fullSpeedEnv {
	t.Helper()
	layer := makeLayer(t, mixedFiles())
	e := &fullSpeedEnv{layer: layer, z: buildZtoc(t, layer, 64<<10, nil), blob: &rangeLog{data: layer}}
	var err error
	if e.cache, err = cache.New(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	return e
}

// manager returns a full-speed Manager fetching segments of 64 KiB, 4 at a
// time, holding background transfers while wait blocks.
func (e *fullSpeedEnv) manager(t *testing.T, wait func(context.Context) error, preempt func() <-chan struct{}, demand func() func()) *Manager {
	t.Helper()
	m, err := New(e.z, e.blob, e.cache, Options{LayerDigest: digest.FromBytes(e.layer), FetchAhead: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	m.FullSpeed(4, wait, preempt, demand)
	m.full.Load().chunk = 64 << 10 // many segments from a small layer
	return m
}

// TestFullSpeedCompletesWithoutReads: with no read at all, the steps
// complete and verify the layer, several range requests were in flight at
// once, and every blob byte crossed the network once.
func TestFullSpeedCompletesWithoutReads(t *testing.T) {
	e := newFullSpeedEnv(t)
	m := e.manager(t, nil, nil, nil)
	completeLayer(t, m)
	if got, want := e.blob.bytesAsked(), int64(len(e.layer)); got != want {
		t.Errorf("fetched %d bytes, want the blob's %d", got, want)
	}
	e.blob.mu.Lock()
	if e.blob.maxOpen < 2 {
		t.Errorf("at most %d range request in flight, want parallel ones", e.blob.maxOpen)
	}
	e.blob.mu.Unlock()
	// The pass cached every span: reads are local now.
	before := e.blob.requests()
	for _, f := range mixedFiles() {
		got, err := readFile(context.Background(), m, entryOf(t, e.z, f.name), 8192)
		if err != nil || !bytes.Equal(got, f.data) {
			t.Fatalf("read %s after completion: %v", f.name, err)
		}
	}
	if after := e.blob.requests(); after != before {
		t.Errorf("%d range requests after completion, want none", after-before)
	}
}

// TestFullSpeedDemandSpansFetchedOnce: spans read on demand before the
// pass reaches them are not fetched again by it: the pass consumes their
// compressed bytes from the cache. The blob crosses the network once.
func TestFullSpeedDemandSpansFetchedOnce(t *testing.T) {
	e := newFullSpeedEnv(t)
	m := e.manager(t, nil, nil, nil)
	ctx := context.Background()
	ent := entryOf(t, e.z, "big/one")
	if _, err := readFile(ctx, m, ent, 128<<10); err != nil {
		t.Fatal(err)
	}
	first, last := e.z.SpansFor(ent.UncompressedOffset, ent.UncompressedSize)
	if demand := e.blob.requests(); demand < 3 {
		t.Fatalf("the read made %d range requests, want a span each", e.blob.requests())
	}
	completeLayer(t, m)
	for id := first; id <= last; id++ {
		s, _ := e.z.Span(id)
		if got := e.blob.overlapping(s.CompressedStart, s.CompressedEnd); len(got) != 1 {
			t.Errorf("span %d [%d,%d) was asked for in %d requests %v, want 1", id, s.CompressedStart, s.CompressedEnd, len(got), got)
		}
	}
	// Neighbouring spans share at most a byte each.
	if extra := e.blob.bytesAsked() - int64(len(e.layer)); extra < 0 || extra > int64(last-first+2) {
		t.Errorf("fetched %d bytes more than the blob", extra)
	}
	if !m.Complete() {
		t.Fatal("not complete")
	}
	if n := len(m.kept); n != 0 {
		t.Errorf("%d kept spans left after completion", n)
	}
}

// TestFullSpeedKeptSpanDamaged: a kept compressed span that no longer
// matches its digest on disk is fetched again, and the pass completes: the
// copy is only a shortcut, never trusted.
func TestFullSpeedKeptSpanDamaged(t *testing.T) {
	e := newFullSpeedEnv(t)
	m := e.manager(t, nil, nil, nil)
	ent := entryOf(t, e.z, "big/two")
	if _, err := readFile(context.Background(), m, ent, 128<<10); err != nil {
		t.Fatal(err)
	}
	id := e.z.SpanOf(ent.UncompressedOffset + 1000)
	s, _ := e.z.Span(id)
	bad := bytes.Clone(e.layer[s.CompressedStart:s.CompressedEnd])
	bad[len(bad)/2] ^= 1
	if err := e.cache.Put(m.compressedKey(id), bad); err != nil {
		t.Fatal(err)
	}
	completeLayer(t, m)
	if got := e.blob.overlapping(s.CompressedStart, s.CompressedEnd); len(got) != 2 {
		t.Errorf("damaged span was asked for in %d requests, want 2 (demand, pass)", len(got))
	}
}

// TestFullSpeedForegroundNotStarved: while every background transfer is
// held (the registry never answers them), a foreground read of a span the
// pass has not reached is still served, and told to the scheduler as
// demand.
func TestFullSpeedForegroundNotStarved(t *testing.T) {
	e := newFullSpeedEnv(t)
	ent := entryOf(t, e.z, "big/two")
	id := e.z.SpanOf(ent.UncompressedOffset + 1000)
	s, _ := e.z.Span(id)
	e.blob.release = make(chan struct{})
	e.blob.block = func(start, end int64) bool { return start != s.CompressedStart || end != s.CompressedEnd }
	var mu sync.Mutex
	demands, active := 0, 0
	m := e.manager(t, nil, nil, func() func() {
		mu.Lock()
		demands++
		active++
		mu.Unlock()
		return func() { mu.Lock(); active--; mu.Unlock() }
	})
	stepCtx, stop := context.WithCancel(context.Background())
	stepped := make(chan error, 1)
	go func() { _, _, err := m.FetchNext(stepCtx); stepped <- err }()
	deadline := time.Now().Add(5 * time.Second)
	for e.blob.bytesAsked() == 0 && time.Now().Before(deadline) { // the window is out
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p := make([]byte, 4096)
	if _, err := m.ReadAt(ctx, p, s.UncompressedStart+100); err != nil {
		t.Fatalf("foreground read while background transfers hang: %v", err)
	}
	if !bytes.Equal(p, tarBytes(t, &env{layer: e.layer})[s.UncompressedStart+100:][:len(p)]) {
		t.Fatal("foreground read returned wrong bytes")
	}
	// The transfer's end is told from the flight's goroutine, which may
	// run after the read has its bytes (GOMAXPROCS=1 shows it).
	counts := func() (int, int) { mu.Lock(); defer mu.Unlock(); return demands, active }
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if _, a := counts(); a == 0 {
			break
		}
	}
	if d, a := counts(); d != 1 || a != 0 {
		t.Errorf("demand told %d times, %d still active; want 1, 0", d, a)
	}
	stop()
	if err := <-stepped; !errors.Is(err, context.Canceled) {
		t.Errorf("held step ended with %v, want context.Canceled", err)
	}
	close(e.blob.release)
}

// TestFullSpeedWaitsForForeground: background transfers do not start
// while wait holds them; the layer completes once it lets them go.
func TestFullSpeedWaitsForForeground(t *testing.T) {
	e := newFullSpeedEnv(t)
	gate := make(chan struct{})
	m := e.manager(t, func(ctx context.Context) error {
		select {
		case <-gate:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}, nil, nil)
	done := make(chan struct{})
	go func() { defer close(done); completeLayer(t, m) }()
	time.Sleep(50 * time.Millisecond)
	if n := e.blob.bytesAsked(); n != 0 {
		t.Fatalf("%d bytes asked for while the gate was shut", n)
	}
	close(gate)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("not complete after the gate opened")
	}
}

// TestFullSpeedPreemptedTransferResumes: a background transfer in
// progress when a foreground read starts is broken off, and the rest of
// its range is asked for again, from the byte it stopped at; the layer
// completes with every byte received once.
func TestFullSpeedPreemptedTransferResumes(t *testing.T) {
	e := newFullSpeedEnv(t)
	e.blob.stallFirst = true
	foreground := make(chan struct{})
	var once sync.Once
	m := e.manager(t, nil, func() <-chan struct{} {
		select {
		case <-foreground:
			return nil // one foreground read only
		default:
			return foreground
		}
	}, nil)
	done := make(chan struct{})
	go func() { defer close(done); completeLayer(t, m) }()
	deadline := time.Now().Add(5 * time.Second)
	for e.blob.bytesAsked() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // the first 32 KiB arrive
	once.Do(func() { close(foreground) })
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("not complete after the preemption")
	}
	if !errors.Is(errPreempted, context.Canceled) {
		t.Error("a preempted transfer's error is not a cancellation: fs/remote would count it as registry trouble")
	}
	e.blob.mu.Lock()
	defer e.blob.mu.Unlock()
	first := e.blob.ranges[0]
	want := [2]int64{first[0] + 32<<10, first[1]}
	if !slices.Contains(e.blob.ranges, want) {
		t.Errorf("ranges %v: none resumes the first, %v, at %d", e.blob.ranges, first, want[0])
	}
}

// TestFullSpeedTamperedBlobFails: full-speed completion verifies as the
// idle pass does: a changed byte fails the layer.
func TestFullSpeedTamperedBlobFails(t *testing.T) {
	e := newFullSpeedEnv(t)
	s, _ := e.z.Span(ztoc.SpanID(e.z.NumSpans() / 2))
	e.blob.data = bytes.Clone(e.layer)
	e.blob.data[(s.CompressedStart+s.CompressedEnd)/2] ^= 0x10
	m := e.manager(t, nil, nil, nil)
	if err := complete(t, m); !errors.Is(err, ErrLayerFailed) {
		t.Fatalf("completion of a tampered blob = %v, want ErrLayerFailed", err)
	}
	if m.Complete() {
		t.Error("tampered layer reports complete")
	}
}

func entryOf(t *testing.T, z *ztoc.Ztoc, name string) *ztoc.FileMetadata {
	t.Helper()
	for i := range z.TOC {
		if z.TOC[i].Name == name {
			return &z.TOC[i]
		}
	}
	t.Fatalf("%s not in TOC", name)
	return nil
}
