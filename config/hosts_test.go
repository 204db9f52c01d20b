package config

import (
	"strings"
	"testing"
)

// TestRegistryConfigPath: [registry] config_path defaults to containerd's
// own (/etc/containerd/certs.d), can be emptied (no host configuration),
// and must be absolute.
func TestRegistryConfigPath(t *testing.T) {
	if got := Default().Registry.ConfigPath; got != "/etc/containerd/certs.d" {
		t.Errorf("default config_path = %q", got)
	}
	for in, want := range map[string]string{
		"":                                       "/etc/containerd/certs.d",
		"[registry]\nconfig_path = \"\"\n":       "",
		"[registry]\nconfig_path = \"/etc/x\"\n": "/etc/x",
	} {
		cfg, err := Parse(strings.NewReader(in))
		if err != nil {
			t.Fatalf("Parse(%q): %v", in, err)
		}
		if cfg.Registry.ConfigPath != want {
			t.Errorf("Parse(%q): config_path %q, want %q", in, cfg.Registry.ConfigPath, want)
		}
	}
	_, err := Parse(strings.NewReader("[registry]\nconfig_path = \"certs.d\"\n"))
	if err == nil || !strings.Contains(err.Error(), "registry.config_path") {
		t.Errorf("relative config_path: %v", err)
	}
}
