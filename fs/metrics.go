package fs

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Results of a Check, the values of the "result" label.
const (
	checkRecent = "recent" // the registry answered recently; no probe
	checkProbed = "probed" // probed and re-resolved
	checkFailed = "failed" // unusable
)

// metrics are the FS's own collectors (the span managers have theirs).
// Labels come from fixed sets: no digests or mountpoints.
type metrics struct {
	mounted      prometheus.Gauge
	mountSeconds *prometheus.HistogramVec
	checks       *prometheus.CounterVec

	// Passthrough (see passthrough.go), over all mounts.
	passthroughOpens prometheus.Counter
	copies           prometheus.Counter
	copyFailures     prometheus.Counter
	copyBytes        prometheus.Gauge
}

// newMetrics creates the collectors and registers them on reg (nil: left
// unregistered).
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		mounted: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "ociseek", Subsystem: "fs", Name: "layers_mounted",
			Help: "Layers currently mounted lazily.",
		}),
		mountSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "ociseek", Subsystem: "fs", Name: "mount_seconds",
			Help:    "Time to mount a layer (zTOC lookup, blob resolution, FUSE mount), by outcome.",
			Buckets: prometheus.ExponentialBuckets(0.005, 3, 10),
		}, []string{"outcome"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ociseek", Subsystem: "fs", Name: "checks_total",
			Help: "Checks of mounted layers, by result (recent, probed, failed).",
		}, []string{"result"}),
		passthroughOpens: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ociseek", Subsystem: "fs", Name: "passthrough_opens_total",
			Help: "Opens of layer files offered to the kernel for FUSE passthrough (reads then bypass this process).",
		}),
		copies: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ociseek", Subsystem: "fs", Name: "passthrough_copies_total",
			Help: "Files of complete layers copied out of the span cache for FUSE passthrough.",
		}),
		copyFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ociseek", Subsystem: "fs", Name: "passthrough_copy_failures_total",
			Help: "Failed passthrough copies (e.g. a full disk); such files are read through FUSE while mounted.",
		}),
		copyBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "ociseek", Subsystem: "fs", Name: "passthrough_copy_bytes",
			Help: "Bytes of passthrough copies on disk, under <root>/files: outside the span cache's bound, freed on unmount.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{
		m.mounted, m.mountSeconds, m.checks,
		m.passthroughOpens, m.copies, m.copyFailures, m.copyBytes,
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register fs metrics: %w", err)
		}
	}
	return m, nil
}
