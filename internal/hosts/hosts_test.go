package hosts_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	orasremote "oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/ociseek/ociseek/internal/hosts"
	"github.com/ociseek/ociseek/internal/hosts/hoststest"
	"github.com/ociseek/ociseek/internal/regtest"
)

// site is an upstream registry and a mirror registry, each behind a
// counting proxy; clients address the upstream's proxy.
type site struct {
	up, mirror     *regtest.Registry
	upP, mirrorP   *hoststest.Proxy
	dir            string // config_path
	repo           string
	layerA, layerB []byte
	manifest       ocispec.Descriptor
}

// newSite pushes an image of two layers to the upstream and, to the
// mirror, the whole image (full) or only layer A.
func newSite(t *testing.T, full bool) *site {
	t.Helper()
	s := &site{dir: t.TempDir(), repo: "team/app"}
	s.up = regtest.Start(t, regtest.KindDistribution)
	s.mirror = regtest.Start(t, regtest.KindDistribution)
	s.layerA, s.layerB = random(t, 300<<10), random(t, 200<<10)
	tars := []string{ocispec.MediaTypeImageLayer, ocispec.MediaTypeImageLayer}
	s.manifest = s.up.PushImage(t, s.repo, [][]byte{s.layerA, s.layerB}, tars)
	if full {
		s.mirror.PushImage(t, s.repo, [][]byte{s.layerA, s.layerB}, tars)
	} else {
		s.mirror.PushBlob(t, s.repo, s.layerA, ocispec.MediaTypeImageLayer)
	}
	s.upP = hoststest.StartProxy(t, s.up.Host, hoststest.ProxyOptions{})
	s.mirrorP = hoststest.StartProxy(t, s.mirror.Host, hoststest.ProxyOptions{})
	return s
}

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// client is the stack the daemon and the CLI build: hosts over oras auth
// over the hosts transport.
func client(h *hosts.Hosts, cred auth.CredentialFunc) *hosts.Client {
	return h.Client(&auth.Client{
		Client:     &http.Client{Transport: h.Transport()},
		Cache:      auth.NewCache(),
		Credential: cred,
	})
}

// repository addresses repo at the upstream's proxy over plain HTTP.
func (s *site) repository(t *testing.T, c hosts.Doer) *orasremote.Repository {
	t.Helper()
	r, err := orasremote.NewRepository(s.upP.Host + "/" + s.repo)
	if err != nil {
		t.Fatal(err)
	}
	r.PlainHTTP, r.Client = true, c
	return r
}

// fetch reads a blob whole and checks its bytes.
func fetch(t *testing.T, r *orasremote.Repository, want []byte) {
	t.Helper()
	ctx := context.Background()
	rc, err := r.Blobs().Fetch(ctx, ocispec.Descriptor{Digest: digest.FromBytes(want), Size: int64(len(want))})
	if err != nil {
		t.Fatalf("fetch blob: %v", err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("blob: %d bytes, err %v; want %d bytes", len(got), err, len(want))
	}
}

// between fails unless lo <= n <= hi.
func between(t *testing.T, what string, n, lo, hi int64) {
	t.Helper()
	if n < lo || n > hi {
		t.Errorf("%s: %d bytes, want %d..%d", what, n, lo, hi)
	}
}

// slack covers what is not blob bytes: manifests, configs, error bodies.
const slack = 8 << 10

// TestMirrorTakesAllTraffic: with a mirror holding the whole image, the
// tag, the manifest and both layers come from it; the upstream sees no
// request. Each mirror request carries containerd's ns parameter.
func TestMirrorTakesAllTraffic(t *testing.T) {
	s := newSite(t, true)
	hoststest.WriteHosts(t, s.dir, s.upP.Host, `
[host."http://`+s.mirrorP.Host+`"]
  capabilities = ["pull", "resolve"]
`)
	r := s.repository(t, client(hosts.New(hosts.Options{Dir: s.dir}), nil))
	desc, err := r.Resolve(context.Background(), "latest")
	if err != nil || desc.Digest != s.manifest.Digest {
		t.Fatalf("resolve latest: %v %v, want %s", desc.Digest, err, s.manifest.Digest)
	}
	fetch(t, r, s.layerA)
	fetch(t, r, s.layerB)
	if n := len(s.upP.Requests()); n != 0 {
		t.Errorf("upstream saw %d requests, want 0", n)
	}
	total := int64(len(s.layerA) + len(s.layerB))
	between(t, "mirror", s.mirrorP.Bytes(), total, total+slack)
	for _, req := range s.mirrorP.Requests() {
		if !strings.Contains(req.RawQuery, "ns="+strings.ReplaceAll(s.upP.Host, ":", "%3A")) {
			t.Errorf("mirror request %s %s?%s has no ns=%s", req.Method, req.Path, req.RawQuery, s.upP.Host)
		}
	}
}

// TestPartialMirror: a mirror holding only layer A serves it; layer B,
// missing there (404), comes from the upstream, and nothing else does.
func TestPartialMirror(t *testing.T) {
	s := newSite(t, false)
	hoststest.WriteHosts(t, s.dir, s.upP.Host, `
[host."http://`+s.mirrorP.Host+`"]
  capabilities = ["pull"]
`)
	h := hosts.New(hosts.Options{Dir: s.dir})
	r := s.repository(t, client(h, nil))
	fetch(t, r, s.layerA)
	fetch(t, r, s.layerB)
	between(t, "mirror", s.mirrorP.Bytes(), int64(len(s.layerA)), int64(len(s.layerA))+slack)
	between(t, "upstream", s.upP.Bytes(), int64(len(s.layerB)), int64(len(s.layerB))+slack)
	if sk := h.Skipped(); len(sk) != 0 {
		t.Errorf("a 404 made hosts skipped: %v", sk)
	}
	// Resolving a tag needs "resolve", which the mirror lacks.
	before := len(s.mirrorP.Requests())
	if _, err := r.Resolve(context.Background(), "latest"); err != nil {
		t.Fatalf("resolve: %v", err)
	}
	if n := len(s.mirrorP.Requests()); n != before {
		t.Errorf("a pull-only mirror was asked to resolve a tag (%d requests)", n-before)
	}
}

// TestMirrorDownFallsOver: a stopped mirror costs nothing but a refused
// connection: the blob comes from the upstream, and the mirror is skipped
// for the cooldown.
func TestMirrorDownFallsOver(t *testing.T) {
	s := newSite(t, true)
	hoststest.WriteHosts(t, s.dir, s.upP.Host, `
[host."http://`+s.mirrorP.Host+`"]
`)
	s.mirrorP.Stop()
	h := hosts.New(hosts.Options{Dir: s.dir, Cooldown: time.Hour})
	r := s.repository(t, client(h, nil))
	fetch(t, r, s.layerA)
	between(t, "upstream", s.upP.Bytes(), int64(len(s.layerA)), int64(len(s.layerA))+slack)
	if sk := h.Skipped(); len(sk) != 1 || !strings.Contains(sk[0], s.mirrorP.Host) {
		t.Errorf("skipped = %v, want the mirror", sk)
	}
}

// TestNoConfigurationIsUnchanged: without a host directory (or with none
// for this registry) requests go where they are addressed.
func TestNoConfigurationIsUnchanged(t *testing.T) {
	s := newSite(t, true)
	hoststest.WriteHosts(t, s.dir, "other.example", `server = "https://nowhere.example"`)
	for _, dir := range []string{"", t.TempDir() + "/missing", s.dir} {
		r := s.repository(t, client(hosts.New(hosts.Options{Dir: dir}), nil))
		fetch(t, r, s.layerA)
	}
	if n := len(s.mirrorP.Requests()); n != 0 {
		t.Errorf("mirror saw %d requests without configuration", n)
	}
}

// TestDefaultDirectoryAndReload: _default/hosts.toml applies to a
// registry without its own directory, and an edit applies without a new
// Hosts.
func TestDefaultDirectoryAndReload(t *testing.T) {
	s := newSite(t, true)
	hoststest.WriteHosts(t, s.dir, "_default", `
[host."http://`+s.mirrorP.Host+`"]
`)
	r := s.repository(t, client(hosts.New(hosts.Options{Dir: s.dir, Recheck: time.Nanosecond}), nil))
	fetch(t, r, s.layerA)
	if s.upP.Bytes() != 0 || s.mirrorP.Bytes() < int64(len(s.layerA)) {
		t.Errorf("_default: upstream %d bytes, mirror %d", s.upP.Bytes(), s.mirrorP.Bytes())
	}
	// Size and time change: the directory is read again.
	time.Sleep(10 * time.Millisecond)
	hoststest.WriteHosts(t, s.dir, "_default", "# no mirrors any more\n")
	fetch(t, r, s.layerB)
	between(t, "upstream after the edit", s.upP.Bytes(), int64(len(s.layerB)), int64(len(s.layerB))+slack)
}

// TestOverridePathAndHeader: a host with override_path is asked under its
// own API root, with the headers of its header table; the upstream is
// not asked.
func TestOverridePathAndHeader(t *testing.T) {
	s := newSite(t, true)
	s.mirrorP = hoststest.StartProxy(t, s.mirror.Host, hoststest.ProxyOptions{Prefix: "/cache/v2-api"})
	hoststest.WriteHosts(t, s.dir, s.upP.Host, `
[host."http://`+s.mirrorP.Host+`/cache/v2-api"]
  override_path = true
  [host."http://`+s.mirrorP.Host+`/cache/v2-api".header]
    x-mirror-key = "k1"
`)
	r := s.repository(t, client(hosts.New(hosts.Options{Dir: s.dir}), nil))
	fetch(t, r, s.layerB)
	reqs := s.mirrorP.Requests()
	if len(reqs) == 0 || s.upP.Bytes() != 0 {
		t.Fatalf("mirror %d requests, upstream %d bytes", len(reqs), s.upP.Bytes())
	}
	for _, req := range reqs {
		if !strings.HasPrefix(req.Path, "/cache/v2-api/"+s.repo+"/blobs/") || req.Header.Get("x-mirror-key") != "k1" {
			t.Errorf("mirror request %s with x-mirror-key %q", req.Path, req.Header.Get("x-mirror-key"))
		}
	}
}

// TestPushGoesToPushHostsOnly: a blob pushed through a pull/resolve
// mirror's configuration reaches the upstream, not the mirror.
func TestPushGoesToPushHostsOnly(t *testing.T) {
	s := newSite(t, true)
	hoststest.WriteHosts(t, s.dir, s.upP.Host, `
[host."http://`+s.mirrorP.Host+`"]
  capabilities = ["pull", "resolve"]
`)
	r := s.repository(t, client(hosts.New(hosts.Options{Dir: s.dir}), nil))
	blob := random(t, 10<<10)
	desc := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	if err := r.Blobs().Push(context.Background(), desc, bytes.NewReader(blob)); err != nil {
		t.Fatalf("push: %v", err)
	}
	for _, req := range s.mirrorP.Requests() {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			t.Errorf("mirror got %s %s", req.Method, req.Path)
		}
	}
	if ok, err := s.up.Repository(t, s.repo).Blobs().Exists(context.Background(), desc); err != nil || !ok {
		t.Errorf("blob not at the upstream: %v %v", ok, err)
	}
}

// TestCredentialsPerHost: a mirror that demands a password gets the one
// for its own address; the upstream's credentials are never asked for.
func TestCredentialsPerHost(t *testing.T) {
	s := newSite(t, true)
	authMirror := regtest.StartWithAuth(t, "mirroruser", "mirrorpass")
	authMirror.PushBlob(t, s.repo, s.layerA, ocispec.MediaTypeImageLayer)
	hoststest.WriteHosts(t, s.dir, s.upP.Host, `
[host."http://`+authMirror.Host+`"]
`)
	var asked []string
	cred := func(_ context.Context, host string) (auth.Credential, error) {
		asked = append(asked, host)
		if host == authMirror.Host {
			return auth.Credential{Username: "mirroruser", Password: "mirrorpass"}, nil
		}
		return auth.EmptyCredential, nil
	}
	r := s.repository(t, client(hosts.New(hosts.Options{Dir: s.dir}), cred))
	fetch(t, r, s.layerA)
	if s.upP.Bytes() != 0 {
		t.Errorf("upstream sent %d bytes", s.upP.Bytes())
	}
	for _, h := range asked {
		if h != authMirror.Host {
			t.Errorf("credentials asked for %s, want only %s", h, authMirror.Host)
		}
	}
	if len(asked) == 0 {
		t.Error("no credentials asked for the mirror")
	}
}

// TestSilentMirrorIsSkipped: a mirror that accepts connections and never
// answers holds a request for HeaderTimeout only; the blob comes from the
// upstream, and the next request does not wait for the mirror again.
func TestSilentMirrorIsSkipped(t *testing.T) {
	s := newSite(t, true)
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	t.Cleanup(silent.Close)
	t.Cleanup(silent.CloseClientConnections)
	silentHost := strings.TrimPrefix(silent.URL, "http://")
	hoststest.WriteHosts(t, s.dir, s.upP.Host, `
[host."http://`+silentHost+`"]
`)
	h := hosts.New(hosts.Options{Dir: s.dir, HeaderTimeout: 300 * time.Millisecond})
	r := s.repository(t, client(h, nil))
	start := time.Now()
	fetch(t, r, s.layerA)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("first fetch took %s", d)
	}
	if sk := h.Skipped(); len(sk) != 1 || !strings.Contains(sk[0], silentHost) {
		t.Errorf("skipped = %v, want the silent mirror", sk)
	}
	start = time.Now()
	fetch(t, r, s.layerB)
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Errorf("second fetch took %s: the silent mirror was asked again", d)
	}
}
