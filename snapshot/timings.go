package snapshot

import (
	"fmt"
	"strings"
	"time"
)

// LabelTimings records, on a layer the daemon served itself (lazy or
// local-unpack), when its unpack Prepare began and how long each step took:
// the daemon's own trace of a start, which `ociseek explain --timings`
// prints. The value is Timings.String().
const LabelTimings = "ociseek.io/snapshot/timings"

// Timings is the content of LabelTimings.
type Timings struct {
	// Start is when the daemon received the layer's unpack Prepare.
	Start time.Time
	// Mount is the lazy mount attempt: index discovery, zTOC fetch and
	// parse, the blob probe and the FUSE mount. Zero: not attempted.
	Mount time.Duration
	// Unpack is the local unpack (download and extraction). Zero: none.
	Unpack time.Duration
	// Total runs from Start until the layer was committed.
	Total time.Duration
}

// String encodes t as "start=RFC3339Nano,mount=D,unpack=D,total=D".
func (t Timings) String() string {
	return fmt.Sprintf("start=%s,mount=%s,unpack=%s,total=%s",
		t.Start.UTC().Format(time.RFC3339Nano), t.Mount, t.Unpack, t.Total)
}

// ParseTimings decodes a LabelTimings value; unknown keys are skipped, so
// a newer daemon may add steps.
func ParseTimings(s string) (Timings, error) {
	var t Timings
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return Timings{}, fmt.Errorf("timings label %q: %q is not key=value", s, kv)
		}
		var err error
		switch k {
		case "start":
			t.Start, err = time.Parse(time.RFC3339Nano, v)
		case "mount":
			t.Mount, err = time.ParseDuration(v)
		case "unpack":
			t.Unpack, err = time.ParseDuration(v)
		case "total":
			t.Total, err = time.ParseDuration(v)
		}
		if err != nil {
			return Timings{}, fmt.Errorf("timings label %q: %s: %w", s, k, err)
		}
	}
	if t.Start.IsZero() {
		return Timings{}, fmt.Errorf("timings label %q: no start", s)
	}
	return t, nil
}

// finish sets Total and writes t into labels.
func (t *Timings) finish(labels map[string]string) {
	t.Total = time.Since(t.Start)
	labels[LabelTimings] = t.String()
}
