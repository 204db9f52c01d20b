package config

import (
	"strings"
	"testing"
	"time"
)

func TestCRIKeychainKeys(t *testing.T) {
	cfg, err := Parse(strings.NewReader(`
[cri_keychain]
enable = true
image_service_path = "/run/k3s/containerd/containerd.sock"
listen_path = "/run/ociseek/cri.sock"
ttl = "2h"
`))
	if err != nil {
		t.Fatal(err)
	}
	want := CRIKeychain{Enable: true, ImageServicePath: "/run/k3s/containerd/containerd.sock", ListenPath: "/run/ociseek/cri.sock", TTL: Dur(2 * time.Hour)}
	if cfg.CRIKeychain != want {
		t.Errorf("parsed %+v, want %+v", cfg.CRIKeychain, want)
	}
	def := Default().CRIKeychain
	if def.Enable || def.ImageServicePath != "/run/containerd/containerd.sock" || def.ListenPath != "" || def.TTL.Duration != 12*time.Hour {
		t.Errorf("defaults %+v: want off, forwarding to containerd's socket, served on daemon.address, 12h", def)
	}
}

func TestCRIKeychainValidation(t *testing.T) {
	for _, tc := range []struct {
		name, file, wantErr string
	}{
		{"forwarding to itself", "[cri_keychain]\nenable = true\nimage_service_path = \"/run/ociseek/ociseek.sock\"\n",
			"cri_keychain.image_service_path: is the socket the daemon serves"},
		{"forwarding to its own listen path", "[cri_keychain]\nenable = true\nlisten_path = \"/run/containerd/containerd.sock\"\n",
			"cri_keychain.image_service_path: is the socket the daemon serves"},
		{"relative path", "[cri_keychain]\nenable = true\nimage_service_path = \"containerd.sock\"\n",
			"cri_keychain.image_service_path: must be an absolute socket path"},
		{"relative listen path", "[cri_keychain]\nenable = true\nlisten_path = \"cri.sock\"\n",
			"cri_keychain.listen_path: must be empty or an absolute socket path"},
		{"no TTL", "[cri_keychain]\nenable = true\nttl = \"0s\"\n", "cri_keychain.ttl: must be positive"},
		{"peer's key name", "[cri_keychain]\nenable_keychain = true\n", "unknown config keys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.file))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %v; want one containing %q", err, tc.wantErr)
			}
		})
	}
	// Off, the section is not checked: a half-written one never stops the daemon.
	if _, err := Parse(strings.NewReader("[cri_keychain]\nimage_service_path = \"x\"\nttl = \"0s\"\n")); err != nil {
		t.Errorf("disabled section rejected: %v", err)
	}
}
