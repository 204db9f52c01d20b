package fs

import (
	"fmt"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"sync"
	"time"

	"github.com/containerd/log"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ociseek/ociseek/fs/span"
)

// mountSettle is how long after the last mount of a burst (an image's
// layers are mounted together) the memory they left behind is returned:
// long enough for the start-up reads of the containers just mounted not
// to share the CPU with the forced collection.
const mountSettle = 5 * time.Second

// memoryRelease returns to the OS, once a burst of mounts has settled, the
// heap those mounts used only while they ran: decoding a zTOC and building
// its tree allocates several times what the tree keeps (measured: a layer
// of 20k files left 17 MB live and about 10 MB more resident that the
// runtime would have kept until the heap grew into it again). The daemon
// then idles at what its mounted layers need. The forced collection costs
// a few milliseconds once per burst, against the tens a mount takes.
type memoryRelease struct {
	// goFloor is the Go runtime's share of the memory limit
	// (WithMemoryLimit); 0: the FS leaves Go's limit alone.
	goFloor int64

	mu     sync.Mutex
	timer  *time.Timer
	closed bool
}

// afterMount (re)starts the settle timer.
func (r *memoryRelease) afterMount() {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closed:
	case r.timer == nil:
		r.timer = time.AfterFunc(mountSettle, r.settle)
	default:
		r.timer.Reset(mountSettle)
	}
}

// liveHeapHeadroom is how many times the live heap the Go limit is at
// least: a limit near the live heap makes the collector run back to back
// (measured: with the trees of a 20k-file layer, 31 MB live, under a
// 36 MiB limit, the 128 MiB read took 3.4 times as long and cat of 2,000
// small files 5.6 times).
const liveHeapHeadroom = 2

// settle returns the memory a burst of mounts used transiently and, when
// the FS manages Go's limit, raises it to liveHeapHeadroom times what the
// mounted layers keep live, if the configured share is less: many mounted
// layers need more than any fixed share, and the collector must not
// thrash for it.
func (r *memoryRelease) settle() {
	debug.FreeOSMemory()
	if r.goFloor <= 0 {
		return
	}
	live := liveHeap()
	if limit := goLimitFor(r.goFloor, live); limit != debug.SetMemoryLimit(-1) {
		debug.SetMemoryLimit(limit)
		log.L.WithField("live_heap", live).WithField("go", limit).Info("Go memory limit set for the mounted layers")
	}
}

// goLimitFor is the Go limit for a live heap of live bytes: the configured
// share floor, or liveHeapHeadroom times live when that is more.
func goLimitFor(floor, live int64) int64 {
	return max(floor, live*liveHeapHeadroom)
}

// liveHeap returns the heap marked live by the last collection.
func liveHeap() int64 {
	s := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	rtmetrics.Read(s)
	if s[0].Value.Kind() != rtmetrics.KindUint64 {
		return 0
	}
	return int64(s[0].Value.Uint64())
}

// close stops a pending release.
func (r *memoryRelease) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.timer != nil {
		r.timer.Stop()
	}
}

// Shares of a memory limit (WithMemoryLimit). Measured on the 360 MB
// image of docs/benchmarks.md (20k files, 4 MiB spans, completed at full
// speed while containers start and read), the daemon's resident memory at
// its peak was: about 19.5 MB of code and data mapped from the binary,
// the live Go heap (31-37 MB once the layer is complete: its tree, zTOC
// and go-fuse's buffers; about 60 MB while the completion and a 128 MiB
// read run), the span buffers outside the heap (bufpool.go), and the
// garbage the collector had not yet reclaimed: the completion allocates
// its 4 MiB segments on the heap (350 MB over the run), and with Go's
// default GOGC=100 the heap grew to 135-145 MB, 150-157 MB resident. A
// limit makes the collector run before the heap grows into it.
const (
	// minMemoryLimit is the smallest limit accepted: below it the
	// collector would run continuously on a mounted 20k-file layer.
	minMemoryLimit = 32 << 20
	// binaryShare is set aside for the code and data mapped from the
	// binary, which count in the resident size but not for the Go runtime.
	binaryShare = 20 << 20
	// poolShareDiv: the free span buffers kept for reuse get 1/8 of the
	// limit (a 64 MiB limit keeps one compressed and one uncompressed
	// 4 MiB span), at most span.DefaultPoolBytes.
	poolShareDiv = 8
)

// memoryBudget is how a memory limit is divided.
type memoryBudget struct {
	// total is the operator's limit; 0: none (Go's defaults apply).
	total int64
	// goLimit is given to the Go runtime (debug.SetMemoryLimit): the
	// heap, stacks and runtime metadata.
	goLimit int64
	// poolBytes bounds the free span buffers kept for reuse.
	poolBytes int64
}

// budgetFor divides limit among the binary, the span buffer pool and the
// Go runtime.
func budgetFor(limit int64) memoryBudget {
	if limit <= 0 {
		return memoryBudget{}
	}
	pool := min(limit/poolShareDiv, span.DefaultPoolBytes)
	return memoryBudget{total: limit, goLimit: limit - binaryShare - pool, poolBytes: pool}
}

// WithMemoryLimit bounds the process's resident memory to about limit
// bytes (0: no bound, Go's defaults): the Go runtime gets a soft limit
// (debug.SetMemoryLimit, as GOMEMLIMIT would set it) of what is left once
// the binary's mapped code and the span buffer pool have their shares, and
// the pool keeps at most its share of free buffers. Spans being fetched or
// read are outside the heap and not bounded by it (span.Options'
// MaxParallel and HotSpans bound them). The Go limit is process-wide: the
// last FS created with this option sets it.
func WithMemoryLimit(limit int64) Opt {
	return func(o *options) error {
		if limit < 0 {
			return fmt.Errorf("memory limit %d is negative", limit)
		}
		if limit != 0 && limit < minMemoryLimit {
			return fmt.Errorf("memory limit %d bytes is below the minimum of %d", limit, int64(minMemoryLimit))
		}
		o.memory = budgetFor(limit)
		return nil
	}
}

// applyMemoryBudget gives the Go runtime its limit (raised later for the
// mounted layers' live heap, memoryRelease.settle) and the span managers a
// pool of the budget's size, and reports the shares as metrics (on reg,
// when not nil) and in the log.
func applyMemoryBudget(b memoryBudget, so *span.Options, reg prometheus.Registerer) error {
	if b.total == 0 {
		return nil
	}
	debug.SetMemoryLimit(b.goLimit)
	so.Buffers = span.NewBoundedBufferPool(b.poolBytes, 0)
	log.L.WithField("limit", b.total).WithField("go", b.goLimit).WithField("span_pool", b.poolBytes).
		Info("memory limit set")
	if reg == nil {
		return nil
	}
	const help = "The memory limit (fetch.memory_limit) and its shares: total, go (the Go runtime's soft limit now, as read back from the runtime: at least twice the live heap), span_pool (free span buffers kept)."
	for part, value := range map[string]func() float64{
		"total":     func() float64 { return float64(b.total) },
		"go":        func() float64 { return float64(debug.SetMemoryLimit(-1)) },
		"span_pool": func() float64 { return float64(b.poolBytes) },
	} {
		g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "ociseek", Subsystem: "fs", Name: "memory_limit_bytes", Help: help,
			ConstLabels: prometheus.Labels{"part": part},
		}, value)
		if err := reg.Register(g); err != nil {
			return fmt.Errorf("register memory limit metric: %w", err)
		}
	}
	return nil
}
