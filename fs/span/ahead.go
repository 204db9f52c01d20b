package span

import "github.com/ociseek/ociseek/ztoc"

// maxStreams is how many sequential readers of one layer are told apart
// (e.g. a few files copied at once).
const maxStreams = 4

// seqSlack is how far from where a stream stopped a read may start and
// still continue it: the kernel issues readahead requests slightly out of
// order, and files read in tar order are separated by their headers.
const seqSlack = 256 << 10

// seqMin is how much a stream must have read before fetch-ahead starts, so
// a few scattered reads that happen to land near each other do not fetch
// megabytes nobody asked for.
const seqMin = 512 << 10

// streams remembers where recent readers started and stopped; guarded by
// Manager.mu.
type streams struct {
	starts, ends [maxStreams]int64
	next         int
}

// note records a read of [off, end) and reports whether it continues a
// stream that has read at least seqMin bytes.
func (s *streams) note(off, end int64) bool {
	for i, e := range s.ends {
		if e > 0 && off >= e-seqSlack && off <= e+seqSlack {
			s.ends[i] = max(e, end)
			return s.ends[i]-s.starts[i] >= seqMin
		}
	}
	s.starts[s.next], s.ends[s.next] = off, end
	s.next = (s.next + 1) % maxStreams
	return false
}

// startFlights starts, without waiting for them, the fetches a read of
// [off, end) will need after its first span (so a read crossing spans
// fetches them in parallel) and, when the read continues a stream, the
// fetches of the FetchAhead spans after it. Fetch-ahead never takes the
// last fetch slot, which stays free for demand reads.
func (m *Manager) startFlights(off, end int64, first, last ztoc.SpanID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sequential := m.seq.note(off, end)
	for id := first + 1; id <= last; id++ {
		if m.needsFetchLocked(id) {
			m.startFlightLocked(id, ReasonDemand, 0, true)
		}
	}
	if !sequential || m.opts.FetchAhead <= 0 {
		return
	}
	stop := min(int(last)+m.opts.FetchAhead, len(m.spans)-1)
	for id := last + 1; int(id) <= stop; id++ {
		// Flights writing their span to the cache do not hold back the
		// next transfers (a 4 MiB write costs about as much CPU as its
		// inflate, and counting it stalled the pipeline), but are bounded
		// too, by their memory.
		if m.streaming >= m.opts.MaxParallel-1 || len(m.flights) >= 2*m.opts.MaxParallel {
			return
		}
		if m.needsFetchLocked(id) {
			m.startFlightLocked(id, ReasonAhead, 0, true)
		}
	}
}

// needsFetchLocked reports whether span id is neither verified, held in
// memory, nor being fetched; the caller holds m.mu.
func (m *Manager) needsFetchLocked(id ztoc.SpanID) bool {
	st := m.state[id]
	if st == stateVerified || st == stateFailed || m.flights[id] != nil {
		return false
	}
	return !m.hot.has(id)
}
