package remote

// Range reads through containerd's hosts.toml (internal/hosts), with real
// registries on 127.0.0.1 behind counting proxies.

import (
	"context"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/ociseek/ociseek/internal/hosts"
	"github.com/ociseek/ociseek/internal/hosts/hoststest"
	"github.com/ociseek/ociseek/internal/regtest"
)

// mirrored is one blob on an upstream registry and on a mirror registry,
// each behind a counting proxy.
type mirrored struct {
	data          []byte
	dgst          digest.Digest
	upstream, mir *regtest.Registry
	dir           string // config_path
}

func newMirrored(t *testing.T, size int) *mirrored {
	t.Helper()
	m := &mirrored{data: randBytes(77, size), dir: t.TempDir()}
	m.upstream = regtest.Start(t, regtest.KindDistribution)
	m.mir = regtest.Start(t, regtest.KindDistribution)
	m.dgst = pushBlob(t, m.upstream, "app", m.data)
	pushBlob(t, m.mir, "app", m.data)
	return m
}

// hostsClient is the daemon's stack: hosts over oras auth over the hosts
// transport, with fs/remote's transport tuning.
func hostsClient(dir string) Doer {
	h := hosts.New(hosts.Options{Dir: dir, NewTransport: NewTransport})
	return h.Client(&auth.Client{Client: &http.Client{Transport: h.Transport(), CheckRedirect: CheckRedirect}, Cache: auth.NewCache()})
}

// TestRangeReadsFromMirror: an HTTPS upstream (its CA trusted through
// hosts.toml only) with a plain-HTTP mirror holding the blob: the probe
// and every range come from the mirror; the upstream sends nothing. (A
// mirror on HTTP is the node operator's choice, not a downgrade: the read
// is not refused as an insecure redirect.)
func TestRangeReadsFromMirror(t *testing.T) {
	m := newMirrored(t, 2<<20)
	ca := hoststest.NewCA(t)
	up := hoststest.StartProxy(t, m.upstream.Host, hoststest.ProxyOptions{TLS: ca.ServerTLS(t, nil)})
	mirror := hoststest.StartProxy(t, m.mir.Host, hoststest.ProxyOptions{})
	ca.WriteCA(t, hosts.HostDir(m.dir, up.Host), "ca.pem")
	hoststest.WriteHosts(t, m.dir, up.Host, `
ca = "ca.pem"
[host."http://`+mirror.Host+`"]
  capabilities = ["pull", "resolve"]
`)
	b, err := Open(context.Background(), hostsClient(m.dir), up.Host+"/app", m.dgst, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	for _, r := range [][2]int64{{0, 100_000}, {500_000, 1 << 20}, {1 << 20, 2 << 20}} {
		if _, err := readAll(t, context.Background(), b, m.data, r[0], r[1]); err != nil {
			t.Fatalf("read %v: %v", r, err)
		}
	}
	if n := len(up.Requests()); n != 0 {
		t.Errorf("upstream saw %d requests", n)
	}
	want := int64(1 + 100_000 + (1<<20 - 500_000) + 1<<20)
	if got := mirror.Bytes(); got != want {
		t.Errorf("mirror sent %d bytes, want %d", got, want)
	}
}

// TestMirrorStopsMidRead: the mirror goes down after sending 1 MiB of a
// 4 MiB range. The read completes from the upstream with no error, using
// one retry of the range's budget (MaxRetries 1): the rest, and only the
// rest, comes from the upstream, in one request.
func TestMirrorStopsMidRead(t *testing.T) {
	m := newMirrored(t, 4<<20)
	up := hoststest.StartProxy(t, m.upstream.Host, hoststest.ProxyOptions{})
	const cut = 1 << 20
	mirror := hoststest.StartProxy(t, m.mir.Host, hoststest.ProxyOptions{DieAfter: cut + 1}) // +1: the probe
	hoststest.WriteHosts(t, m.dir, up.Host, `
[host."http://`+mirror.Host+`"]
  capabilities = ["pull"]
`)
	b, err := Open(context.Background(), hostsClient(m.dir), up.Host+"/app", m.dgst, Options{PlainHTTP: true, MaxRetries: 1})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if n, err := readAll(t, context.Background(), b, m.data, 0, 4<<20); err != nil {
		t.Fatalf("read: %d bytes, then %v", n, err)
	}
	if got := mirror.Bytes(); got != cut+1 {
		t.Errorf("mirror sent %d bytes, want %d", got, cut+1)
	}
	if got, reqs := up.Bytes(), len(up.Requests()); got != 4<<20-cut || reqs != 1 {
		t.Errorf("upstream sent %d bytes in %d requests, want %d in 1", got, reqs, 4<<20-cut)
	}
}
