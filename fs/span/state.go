package span

import "fmt"

// spanState is where one span is in its life. The transitions allowed are
// listed in transitions; anything else is a bug and panics in setState,
// because it would mean serving bytes the table says we may not.
type spanState uint8

const (
	// stateEmpty: nothing of the span has been verified or served.
	stateEmpty spanState = iota
	// statePartial (deferred verification only): unverified bytes of the
	// span were served by a flight whose transfer then broke off before the
	// digest could be checked. A hash of them is kept (Manager.partials)
	// until a verified fetch of the span reproduces them.
	statePartial
	// stateVerified: the span's compressed bytes matched its digest at least
	// once and the uncompressed bytes were handed to the cache (which may
	// have dropped them since: a cache miss refetches and verifies again).
	stateVerified
	// stateFailed: the span's bytes did not match its digest, or a served
	// prefix did not match the verified span. The layer is failed.
	stateFailed
)

var stateNames = [...]string{"empty", "partial", "verified", "failed"}

func (s spanState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// transitions is the explicit table of allowed state changes. A failed
// fetch (network, cancelled read) changes nothing, so it has no entry.
var transitions = map[spanState][]spanState{
	stateEmpty:    {statePartial, stateVerified, stateFailed},
	statePartial:  {stateVerified, stateFailed},
	stateVerified: {stateVerified, stateFailed}, // refetch after a cache miss; layer check failing
	stateFailed:   {},
}

func canTransition(from, to spanState) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}
