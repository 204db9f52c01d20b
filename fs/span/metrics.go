package span

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a span is fetched, the values of the "reason" label.
const (
	ReasonDemand     = "demand"     // a read needed it
	ReasonAhead      = "ahead"      // fetched ahead of a sequential reader
	ReasonPrefix     = "prefix"     // a prefix fetched for a small read (deferred mode)
	ReasonBackground = "background" // the background completion pass
)

// Kinds of verification failure, the values of the "kind" label.
const (
	KindSpanDigest  = "span_digest"
	KindPrefix      = "served_prefix"
	KindLayerDigest = "layer_digest"
	KindTarHeader   = "tar_header"
	// KindStream: the completion pass found the zTOC contradicting the
	// layer (a checkpoint, span, TOC entry or size; ztoc.ErrMismatch).
	KindStream = "stream"
)

// Metrics holds the span layer's Prometheus collectors. One Metrics is
// shared by every Manager of a daemon; labels come from fixed sets (no
// per-layer labels, so cardinality stays bounded).
type Metrics struct {
	// BytesFetched counts compressed bytes received from registries.
	BytesFetched *prometheus.CounterVec
	// SpansFetched counts span fetches that completed.
	SpansFetched *prometheus.CounterVec
	// FetchErrors counts span fetches that failed for a reason other than
	// verification (network, registry, cancelled reads).
	FetchErrors prometheus.Counter
	// VerifyFailures counts detected mismatches; each fails its layer.
	VerifyFailures *prometheus.CounterVec
	// CacheMisses counts reads of verified spans that the cache no longer
	// held (evicted or found corrupt) and were fetched again.
	CacheMisses prometheus.Counter
	// UnverifiedReads counts reads answered before their span's digest was
	// checked (deferred verification only): the exposure that mode trades
	// for latency.
	UnverifiedReads prometheus.Counter
	// ReadSeconds observes ReadAt latency.
	ReadSeconds prometheus.Histogram
}

// NewMetrics creates the collectors and registers them on reg; a nil reg
// leaves them unregistered (tests, or metrics disabled).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		BytesFetched: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ociseek", Subsystem: "span", Name: "fetched_bytes_total",
			Help: "Compressed bytes received from registries, by reason.",
		}, []string{"reason"}),
		SpansFetched: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ociseek", Subsystem: "span", Name: "fetches_total",
			Help: "Span fetches completed, by reason.",
		}, []string{"reason"}),
		FetchErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ociseek", Subsystem: "span", Name: "fetch_errors_total",
			Help: "Span fetches that failed (network, registry, cancelled).",
		}),
		VerifyFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ociseek", Subsystem: "span", Name: "verify_failures_total",
			Help: "Verification mismatches, each failing its layer, by kind.",
		}, []string{"kind"}),
		CacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ociseek", Subsystem: "span", Name: "cache_misses_total",
			Help: "Reads of verified spans no longer in the cache.",
		}),
		UnverifiedReads: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ociseek", Subsystem: "span", Name: "unverified_reads_total",
			Help: "Reads answered before their span's digest was checked (deferred verification).",
		}),
		ReadSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "ociseek", Subsystem: "span", Name: "read_seconds",
			Help:    "Latency of reads of a layer's uncompressed bytes.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 4, 10),
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.BytesFetched, m.SpansFetched, m.FetchErrors,
		m.VerifyFailures, m.CacheMisses, m.UnverifiedReads, m.ReadSeconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register span metrics: %w", err)
		}
	}
	return m, nil
}
