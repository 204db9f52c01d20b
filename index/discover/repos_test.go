package discover

import "testing"

// TestDefaultPlainHTTP checks which registry hosts get plain HTTP unasked:
// loopback ones only, with or without a port.
func TestDefaultPlainHTTP(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost":         true,
		"LocalHost:5000":    true,
		"127.0.0.1:5000":    true,
		"127.1.2.3":         true,
		"[::1]:5000":        true,
		"[::1]":             true,
		"registry.local":    false,
		"10.0.0.1:5000":     false,
		"public.ecr.aws":    false,
		"localhost.evil.io": false,
		"":                  false,
	} {
		if got := DefaultPlainHTTP(host); got != want {
			t.Errorf("DefaultPlainHTTP(%q) = %v, want %v", host, got, want)
		}
	}
}
