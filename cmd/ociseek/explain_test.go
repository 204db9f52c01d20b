package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	ociseekfs "github.com/ociseek/ociseek/fs"
	"github.com/ociseek/ociseek/snapshot"
)

// TestExplainTable checks the table a user reads and the harness splits:
// one header, one line per layer bottom first, fields without spaces up to
// the reason, and a sentence for every reason the snapshotter records.
func TestExplainTable(t *testing.T) {
	rows := []explainRow{
		{Digest: "sha256:aaaa", Size: 1083991, Path: "local-unpack", Reason: "no-ztoc"},
		{Digest: "sha256:bbbb", Size: 79 << 20, Path: "lazy", Reason: "mounted"},
		{Digest: "sha256:cccc", Size: 512, Path: "not-unpacked"},
		{Digest: "sha256:dddd", Size: 2048, Path: "unknown"},
	}
	var b strings.Builder
	if err := writeExplainTable(&b, rows); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 1+len(rows) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), 1+len(rows), b.String())
	}
	if f := strings.Fields(lines[0]); strings.Join(f, " ") != "LAYER DIGEST SIZE PATH REASON WHY" {
		t.Errorf("header %q", lines[0])
	}
	want := [][]string{
		{"1", "sha256:aaaa", "1.0", "MiB", "local-unpack", "no-ztoc"},
		{"2", "sha256:bbbb", "79.0", "MiB", "lazy", "mounted"},
		{"3", "sha256:cccc", "512", "B", "not-unpacked", "-"},
		{"4", "sha256:dddd", "2.0", "KiB", "unknown", "-"},
	}
	for i, w := range want {
		f := strings.Fields(lines[i+1])
		if len(f) < 7 || strings.Join(f[:6], " ") != strings.Join(w, " ") {
			t.Errorf("line %d = %q, want fields %v then the reason in words", i+1, lines[i+1], w)
		}
	}
	// Columns line up: every line has its digest at the same offset.
	at := strings.Index(lines[0], "DIGEST")
	for _, l := range lines[1:] {
		if strings.Index(l, "sha256:") != at {
			t.Errorf("digest column not aligned at %d: %q", at, l)
		}
	}
}

// TestWhyCoversEveryReason: no decision the snapshotter records is shown
// to the user without words.
func TestWhyCoversEveryReason(t *testing.T) {
	reasons := []snapshot.Reason{
		snapshot.ReasonMounted, snapshot.ReasonLazyDisabled, snapshot.ReasonNoIndex,
		snapshot.ReasonNoZtoc, snapshot.ReasonBelowMinSize, snapshot.ReasonMountFailed,
		snapshot.ReasonNoUnpacker, snapshot.ReasonUnpackFailed, snapshot.ReasonV1NotTrusted,
		snapshot.ReasonZtocTooLarge, snapshot.ReasonZtocBudget, snapshot.ReasonZtocRejected,
		snapshot.ReasonMountedUnverified, snapshot.ReasonUnauthorized,
	}
	outcomes := []snapshot.Outcome{snapshot.OutcomeLazy, snapshot.OutcomeLocalUnpack, snapshot.OutcomeOverlay}
	for _, r := range reasons {
		for _, o := range outcomes {
			if got := why(string(o), string(r)); got == "-" || got == "" {
				t.Errorf("why(%s, %s) = %q: no explanation", o, r, got)
			}
		}
	}
	if why(string(snapshot.OutcomeLocalUnpack), string(snapshot.ReasonBelowMinSize)) == why(string(snapshot.OutcomeOverlay), string(snapshot.ReasonBelowMinSize)) {
		t.Error("below-min-size reads the same whether the daemon or containerd unpacked the layer")
	}
}

func TestHumanSize(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB",
		1 << 20: "1.0 MiB", 3 << 30: "3.0 GiB",
	} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestExplainShowsRecordedFailure: a lazy layer whose zTOC failed
// verification after the mount reads as such, with the recorded reason,
// rather than as an ordinary lazy layer.
func TestExplainShowsRecordedFailure(t *testing.T) {
	bad := "sha256:" + strings.Repeat("a", 64)
	rows := []explainRow{
		{Digest: bad, Size: 1 << 20, Path: string(snapshot.OutcomeLazy), Reason: string(snapshot.ReasonMounted)},
		{Digest: "sha256:" + strings.Repeat("b", 64), Size: 1 << 20, Path: string(snapshot.OutcomeLazy), Reason: string(snapshot.ReasonMounted)},
	}
	rejected := []ociseekfs.Rejection{{Layer: digest.Digest(bad), Ztoc: "cc", Reason: "checkpoint 1: window differs"}}
	for i := range rows {
		markRejected(&rows[i], rejected)
	}
	var out bytes.Buffer
	if err := writeExplainTable(&out, rows); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	if !strings.Contains(lines[1], "verification-failed") || !strings.Contains(lines[1], "window differs") {
		t.Errorf("failed layer's line: %q", lines[1])
	}
	if strings.Contains(lines[2], "verification-failed") {
		t.Errorf("healthy layer's line: %q", lines[2])
	}
}
