package span

import (
	"strings"
	"testing"

	"github.com/ociseek/ociseek/ztoc"
)

// TestFlightPhaseTable checks the phase table's shape: every phase is
// reachable from fetching, settled phases are final, and an illegal change
// panics instead of serving bytes the table forbids.
func TestFlightPhaseTable(t *testing.T) {
	reached := map[flightPhase]bool{phaseFetching: true}
	for todo := []flightPhase{phaseFetching}; len(todo) > 0; todo = todo[1:] {
		for _, to := range phaseTransitions[todo[0]] {
			if !reached[to] {
				reached[to] = true
				todo = append(todo, to)
			}
		}
	}
	for p := range flightPhase(len(phaseNames)) {
		if !reached[p] {
			t.Errorf("phase %v cannot be reached", p)
		}
		if p.settled() && len(phaseTransitions[p]) > 0 {
			t.Errorf("settled phase %v can change", p)
		}
	}
	f := newFlight(ztoc.Span{ID: 3}, ReasonDemand, func() {})
	f.advanceLocked(phaseBroken)
	defer func() {
		r := recover()
		if s, _ := r.(string); !strings.Contains(s, "broken → done") {
			t.Fatalf("broken → done: recovered %v, want a panic naming it", r)
		}
	}()
	f.advanceLocked(phaseDone)
}

// TestFlightPhaseServes checks which phases let a reader have bytes: any
// reader once verified, a deferred-mode reader while the transfer runs or
// after it broke, nobody once tampered or sealed.
func TestFlightPhaseServes(t *testing.T) {
	for _, c := range []struct {
		p                  flightPhase
		strict, unverified bool
	}{
		{phaseFetching, false, true},
		{phaseVerified, true, true},
		{phaseTampered, false, false},
		{phaseBroken, false, true},
		{phaseSealed, false, false},
		{phaseDone, true, true},
		{phaseFailed, false, false},
	} {
		if got := c.p.serves(false); got != c.strict {
			t.Errorf("%v serves a strict reader: %v, want %v", c.p, got, c.strict)
		}
		if got := c.p.serves(true); got != c.unverified {
			t.Errorf("%v serves a deferred reader: %v, want %v", c.p, got, c.unverified)
		}
	}
}
