package main

import (
	"strings"
	"testing"
	"time"

	"github.com/ociseek/ociseek/snapshot"
)

// TestExplainTimingsTable: --timings prints each layer's start relative to
// the first one and its steps in seconds; layers without the label show
// dashes, a bad label says why.
func TestExplainTimingsTable(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	rows := []explainRow{
		{Digest: "sha256:aa", Timings: snapshot.Timings{Start: t0, Mount: 20 * time.Millisecond, Unpack: 300 * time.Millisecond, Total: 330 * time.Millisecond}.String()},
		{Digest: "sha256:bb", Timings: snapshot.Timings{Start: t0.Add(400 * time.Millisecond), Mount: 250 * time.Millisecond, Total: 260 * time.Millisecond}.String()},
		{Digest: "sha256:cc"},
		{Digest: "sha256:dd", Timings: "garbage"},
	}
	var b strings.Builder
	if err := writeTimingsTable(&b, rows); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"first layer prepared at 2026-12-02T03:00:00Z",
		"1      +0.000s  0.020s  0.300s  0.330s",
		"2      +0.400s  0.250s  -       0.260s",
		"3      -        -       -       -",
		"4      -        -       -       -  (timings label \"garbage\"",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("timings table lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	if err := writeTimingsTable(&b, rows[2:3]); err != nil || !strings.Contains(b.String(), "no layer of this image carries") {
		t.Errorf("table without labels: %q, %v", b.String(), err)
	}
}
