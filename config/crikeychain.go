package config

import (
	"path/filepath"
	"time"
)

// CRIKeychain configures the CRI ImageService proxy that gives the daemon
// the credentials kubelet sends with each image pull (image pull secrets,
// credential provider plugins). The key names are soci-snapshotter's and
// stargz-snapshotter's, with their meaning: image_service_path is the
// CRI socket calls are forwarded to, not the one the daemon serves (the
// peers' enable_keychain is enable here).
type CRIKeychain struct {
	Enable           bool     `toml:"enable" comment:"Serve the CRI ImageService and keep the credentials of each PullImage, in memory only, for the image's repository: lazy reads of its layers use them before the Docker config. Point kubelet's imageServiceEndpoint (--image-service-endpoint) at unix://<listen_path, or daemon.address when empty>."`
	ImageServicePath string   `toml:"image_service_path" comment:"containerd's CRI socket, where every ImageService call is forwarded."`
	ListenPath       string   `toml:"listen_path" comment:"Unix socket the daemon serves the ImageService on (mode 0660). Empty: daemon.address, the socket containerd already uses."`
	TTL              Duration `toml:"ttl" comment:"How long credentials are kept after the pull that brought them; a new pull of the repository renews them. Background fetching completes the image's layers long before."`
}

// defaultCRIKeychain is the [cri_keychain] of Default: off, forwarding to
// containerd's default socket.
func defaultCRIKeychain() CRIKeychain {
	return CRIKeychain{
		ImageServicePath: "/run/containerd/containerd.sock",
		TTL:              Dur(12 * time.Hour),
	}
}

// validate reports the invalid [cri_keychain] values through bad. Paths
// are checked only when the proxy is on, so that a disabled section never
// stops the daemon.
func (c CRIKeychain) validate(daemonAddress string, bad func(key, format string, args ...any)) {
	if !c.Enable {
		return
	}
	if !filepath.IsAbs(c.ImageServicePath) {
		bad("cri_keychain.image_service_path", "must be an absolute socket path, got %q", c.ImageServicePath)
	}
	if c.ListenPath != "" && !filepath.IsAbs(c.ListenPath) {
		bad("cri_keychain.listen_path", "must be empty or an absolute socket path, got %q", c.ListenPath)
	}
	served := c.ListenPath
	if served == "" {
		served = daemonAddress
	}
	if filepath.Clean(served) == filepath.Clean(c.ImageServicePath) {
		// The daemon would replace containerd's socket and forward to
		// itself.
		bad("cri_keychain.image_service_path", "is the socket the daemon serves (%s); it must be containerd's", served)
	}
	if c.TTL.Duration <= 0 {
		bad("cri_keychain.ttl", "must be positive, got %s", c.TTL.Duration)
	}
}
