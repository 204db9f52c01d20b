package config

import (
	"strconv"
	"strings"
	"testing"
)

// TestMemoryLimit: fetch.memory_limit has its default of 128 MiB, takes a
// byte count or 0 (no bound), and refuses anything between 0 and 32 MiB
// or below 0, naming the key.
func TestMemoryLimit(t *testing.T) {
	if got := Default().Fetch.MemoryLimit; got != 128<<20 {
		t.Errorf("default fetch.memory_limit %d, want %d", got, 128<<20)
	}
	for _, ok := range []string{"0", "33554432", "1073741824"} {
		cfg, err := Parse(strings.NewReader("[fetch]\nmemory_limit = " + ok + "\n"))
		if err != nil {
			t.Errorf("memory_limit = %s: %v", ok, err)
			continue
		}
		if got := cfg.Fetch.MemoryLimit; ok != strconv.FormatInt(got, 10) {
			t.Errorf("memory_limit = %s parsed as %d", ok, got)
		}
	}
	for _, bad := range []string{"-1", "1048576", "33554431"} {
		_, err := Parse(strings.NewReader("[fetch]\nmemory_limit = " + bad + "\n"))
		if err == nil || !strings.Contains(err.Error(), "fetch.memory_limit") {
			t.Errorf("memory_limit = %s: error %v, want one naming fetch.memory_limit", bad, err)
		}
	}
}
