package main

import (
	"strings"
	"syscall"
	"testing"
)

// TestDaemonMemoryLimit: the daemon started with the default configuration
// applies fetch.memory_limit (128 MiB): its metrics show the limit and the
// Go runtime's share read back from the runtime (128 − 20 − 16 MiB).
func TestDaemonMemoryLimit(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	defer d.stop(t, syscall.SIGINT)
	m := d.scrape(t)
	for _, want := range []string{
		`ociseek_fs_memory_limit_bytes{part="total"} 1.34217728e+08`,
		`ociseek_fs_memory_limit_bytes{part="go"} 9.6468992e+07`,
		`ociseek_fs_memory_limit_bytes{part="span_pool"} 1.6777216e+07`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s; memory limit lines:\n%s", want, grepLines(m, "memory_limit"))
		}
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
