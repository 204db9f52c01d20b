package remote

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ociseek/ociseek/internal/regtest"
)

// dialCounting makes t count the connections it opens.
func dialCounting(t *http.Transport) *atomic.Int64 {
	var n atomic.Int64
	d := &net.Dialer{}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		n.Add(1)
		return d.DialContext(ctx, network, addr)
	}
	return &n
}

// TestTransportKeepsConnections: rounds of 8 parallel range reads of one
// blob, as fetch-ahead over a few layers does, reuse their connections
// through NewTransport; through a transport with the default idle limit
// (2 per host) most rounds dial again.
func TestTransportKeepsConnections(t *testing.T) {
	reg := regtest.Start(t, regtest.KindDistribution)
	data := randBytes(3, 1<<20)
	dgst := pushBlob(t, reg, "test/conns", data)
	rounds := func(tr *http.Transport) int64 {
		dials := dialCounting(tr)
		defer tr.CloseIdleConnections()
		b, err := Open(context.Background(), &http.Client{Transport: tr}, reg.Ref("test/conns", ""), dgst, fastOpts())
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Go(func() {
					start := int64(i) * 100_000
					got, err := readRange(context.Background(), b, start, start+100_000)
					if err != nil || string(got) != string(data[start:start+100_000]) {
						t.Errorf("range %d: %v", i, err)
					}
				})
			}
			wg.Wait()
		}
		return dials.Load()
	}
	tuned := rounds(NewTransport())
	base := http.DefaultTransport.(*http.Transport).Clone()
	def := rounds(base)
	t.Logf("connections dialled: NewTransport %d, default idle limit %d", tuned, def)
	if tuned > 9 { // 8 parallel streams plus Open's probe
		t.Fatalf("NewTransport dialled %d connections for 8 parallel streams", tuned)
	}
	if def <= tuned {
		t.Fatalf("default transport dialled %d, no more than NewTransport's %d: the test shows nothing", def, tuned)
	}
	if !NewTransport().DisableCompression {
		t.Fatal("transparent gzip left on")
	}
}
