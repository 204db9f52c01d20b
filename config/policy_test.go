package config

import (
	"strings"
	"testing"
)

// TestBackgroundPolicy: the completion policy and its parallelism are read
// as written, default to full speed with 4 requests, and bad values are
// refused with the key named.
func TestBackgroundPolicy(t *testing.T) {
	if d := Default().BackgroundFetch; d.Policy != PolicyFullSpeed || d.Parallel != 4 {
		t.Errorf("defaults: policy %q, parallel %d; want %q, 4", d.Policy, d.Parallel, PolicyFullSpeed)
	}
	cfg, err := Parse(strings.NewReader("[background_fetch]\npolicy = \"idle\"\nparallel = 2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if b := cfg.BackgroundFetch; b.Policy != PolicyIdle || b.Parallel != 2 {
		t.Errorf("parsed policy %q, parallel %d; want idle, 2", b.Policy, b.Parallel)
	}
	for in, want := range map[string]string{
		"[background_fetch]\npolicy = \"fast\"\n": "background_fetch.policy",
		"[background_fetch]\nparallel = 0\n":      "background_fetch.parallel",
	} {
		if _, err := Parse(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error naming %s", in, err, want)
		}
	}
}
