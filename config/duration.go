package config

import (
	"fmt"
	"time"
)

// Duration is a time.Duration written in TOML as a Go duration string
// ("30s", "1m30s", "500ms"), so that no key carries a unit in its name.
//
// It is a struct rather than a named int64 on purpose: the TOML decoder
// would otherwise accept a bare integer and read `timeout = 30` as 30
// nanoseconds. A struct only decodes from a string, through UnmarshalText.
type Duration struct{ time.Duration }

// Dur makes a Duration.
func Dur(d time.Duration) Duration { return Duration{d} }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: want a Go duration such as \"30s\" or \"500ms\"", b)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.Duration.String()), nil
}
