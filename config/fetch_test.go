package config

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestFetchLimitsDocumented: `config default` prints the fetch limits that
// bound a failing read, with their defaults and what they mean.
func TestFetchLimitsDocumented(t *testing.T) {
	var buf bytes.Buffer
	if err := Default().Encode(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"min_bytes_per_second = 65536",
		"min_rate_window = '10s'",
		"max_retry_after = '10s'",
		"max_retries = 8",
		"at most 1 + max_retries requests",
		"0: no minimum",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("`config default` lacks %q", want)
		}
	}
}

func TestFetchLimitsParsed(t *testing.T) {
	cfg, err := Parse(strings.NewReader("[fetch]\nmin_bytes_per_second = 0\nmin_rate_window = \"2s\"\nmax_retry_after = \"1s\"\nmax_retries = 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	f := cfg.Fetch
	if f.MinBytesPerSecond != 0 || f.MinRateWindow.Duration != 2*time.Second || f.MaxRetryAfter.Duration != time.Second || f.MaxRetries != 0 {
		t.Fatalf("fetch = %+v", f)
	}
	for in, key := range map[string]string{
		"[fetch]\nmin_bytes_per_second = -1\n": "fetch.min_bytes_per_second",
		"[fetch]\nmin_rate_window = \"0s\"\n":  "fetch.min_rate_window",
		"[fetch]\nmax_retry_after = \"0s\"\n":  "fetch.max_retry_after",
	} {
		if _, err := Parse(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("Parse(%q) = %v, want an error naming %s", in, err, key)
		}
	}
}
