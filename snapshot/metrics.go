package snapshot

import "github.com/prometheus/client_golang/prometheus"

// metrics are the snapshotter's collectors. They are fields, registered on
// the Registerer given with WithRegisterer, never package variables: two
// snapshotters in one process (as in tests) keep separate counts.
type metrics struct {
	decisions *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ociseek",
			Subsystem: "snapshot",
			Name:      "layer_decisions_total",
			Help:      "Layer unpack Prepares by outcome (lazy, local-unpack, overlay) and reason.",
		}, []string{"outcome", "reason"}),
	}
	if reg != nil {
		if err := reg.Register(m.decisions); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) record(d Decision) {
	m.decisions.WithLabelValues(string(d.Outcome), string(d.Reason)).Inc()
}
