package hosts_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ociseek/ociseek/internal/hosts"
	"github.com/ociseek/ociseek/internal/hosts/hoststest"
)

// TestPrivateCA: a registry whose certificate comes from a CA the system
// does not trust is refused, until its hosts.toml names that CA in "ca".
func TestPrivateCA(t *testing.T) {
	s := newSite(t, true)
	ca := hoststest.NewCA(t)
	tlsUp := hoststest.StartProxy(t, s.up.Host, hoststest.ProxyOptions{TLS: ca.ServerTLS(t, nil)})
	s.upP = tlsUp
	desc := ocispec.Descriptor{Digest: digest.FromBytes(s.layerA), Size: int64(len(s.layerA))}

	r := s.repository(t, client(hosts.New(hosts.Options{Dir: s.dir}), nil))
	r.PlainHTTP = false
	if _, err := r.Blobs().Fetch(context.Background(), desc); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("fetch without the CA: %v, want a certificate error", err)
	}

	hostDir := hosts.HostDir(s.dir, tlsUp.Host)
	ca.WriteCA(t, hostDir, "ca.pem")
	hoststest.WriteHosts(t, s.dir, tlsUp.Host, `ca = "ca.pem"`)
	r = s.repository(t, client(hosts.New(hosts.Options{Dir: s.dir}), nil))
	r.PlainHTTP = false
	fetch(t, r, s.layerA)
	between(t, "TLS upstream", tlsUp.Bytes(), int64(len(s.layerA)), int64(len(s.layerA))+slack)
}

// TestClientCertificate: a TLS mirror that demands a client certificate
// serves nothing (the upstream does) until hosts.toml gives the "client"
// pair; then it serves everything. skip_verify also gets past an unknown
// CA.
func TestClientCertificate(t *testing.T) {
	s := newSite(t, true)
	serverCA, clientCA := hoststest.NewCA(t), hoststest.NewCA(t)
	mirror := hoststest.StartProxy(t, s.mirror.Host, hoststest.ProxyOptions{TLS: serverCA.ServerTLS(t, clientCA)})
	dir := hosts.HostDir(s.dir, s.upP.Host)
	serverCA.WriteCA(t, dir, "mirror-ca.pem")
	cert, _ := clientCA.WriteClientPair(t, filepath.Join(dir, "certs"), "node")

	hoststest.WriteHosts(t, s.dir, s.upP.Host, `
[host."https://`+mirror.Host+`"]
  ca = "mirror-ca.pem"
`)
	r := s.repository(t, client(hosts.New(hosts.Options{Dir: s.dir}), nil))
	fetch(t, r, s.layerA)
	if mirror.Bytes() != 0 || s.upP.Bytes() < int64(len(s.layerA)) {
		t.Fatalf("without a client certificate: mirror sent %d bytes, upstream %d", mirror.Bytes(), s.upP.Bytes())
	}

	for name, extra := range map[string]string{
		"ca":          `ca = "mirror-ca.pem"`,
		"skip_verify": `skip_verify = true`,
	} {
		t.Run(name, func(t *testing.T) {
			hoststest.WriteHosts(t, s.dir, s.upP.Host, `
[host."https://`+mirror.Host+`"]
  `+extra+`
  client = [["`+cert+`", "certs/node.key"]]
`)
			up, mb := s.upP.Bytes(), mirror.Bytes()
			r := s.repository(t, client(hosts.New(hosts.Options{Dir: s.dir}), nil))
			fetch(t, r, s.layerB)
			if s.upP.Bytes() != up {
				t.Errorf("upstream sent %d bytes", s.upP.Bytes()-up)
			}
			between(t, "mirror", mirror.Bytes()-mb, int64(len(s.layerB)), int64(len(s.layerB))+slack)
		})
	}
}
