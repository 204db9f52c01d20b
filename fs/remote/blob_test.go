package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote/auth"
)

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// pushBlob stores data as a blob in repo on reg and returns its digest.
func pushBlob(t *testing.T, reg *regtest.Registry, repo string, data []byte) digest.Digest {
	t.Helper()
	desc := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(data), Size: int64(len(data))}
	r := reg.Repository(t, repo)
	if err := r.Blobs().Push(context.Background(), desc, bytes.NewReader(data)); err != nil {
		t.Fatalf("push blob: %v", err)
	}
	return desc.Digest
}

func fastOpts() Options {
	return Options{PlainHTTP: true, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxRetries: 3, RequestTimeout: 5 * time.Second}
}

func readRange(ctx context.Context, b *Blob, start, end int64) ([]byte, error) {
	rc, err := b.FetchRange(ctx, start, end)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestRegistryRanges(t *testing.T) {
	for _, kind := range []regtest.Kind{regtest.KindDistribution, regtest.KindOlareg} {
		t.Run(string(kind), func(t *testing.T) {
			reg := regtest.Start(t, kind)
			data := randBytes(1, 3<<20+17)
			dgst := pushBlob(t, reg, "test/layer", data)
			ctx := context.Background()
			client := &auth.Client{Client: http.DefaultClient}
			b, err := Open(ctx, client, reg.Ref("test/layer", ""), dgst, Options{PlainHTTP: true, Size: int64(len(data))})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if b.Size() != int64(len(data)) {
				t.Fatalf("Size = %d, want %d", b.Size(), len(data))
			}
			for _, r := range [][2]int64{{0, 1}, {0, int64(len(data))}, {1000, 70000}, {int64(len(data)) - 5, int64(len(data))}, {42, 42}} {
				got, err := readRange(ctx, b, r[0], r[1])
				if err != nil || !bytes.Equal(got, data[r[0]:r[1]]) {
					t.Fatalf("range %v: err=%v, %d bytes", r, err, len(got))
				}
			}
			if _, err := b.FetchRange(ctx, 0, int64(len(data))+1); err == nil {
				t.Fatal("range past the end accepted")
			}
			if _, err := Open(ctx, client, reg.Ref("test/layer", ""), dgst, Options{PlainHTTP: true, Size: 5}); !errors.Is(err, ErrSizeMismatch) {
				t.Fatalf("wrong expected size: %v", err)
			}
			missing := digest.FromString("absent")
			start := time.Now()
			_, err = Open(ctx, client, reg.Ref("test/layer", ""), missing, fastOpts())
			var se *StatusError
			if !errors.As(err, &se) || se.Code != http.StatusNotFound {
				t.Fatalf("missing blob: %v, want a 404 StatusError", err)
			}
			if time.Since(start) > 2*time.Second {
				t.Fatalf("404 was retried: took %v", time.Since(start))
			}
		})
	}
}

// TestRegistryStoppedMidRead stops the registry while a range streams: the
// read fails within a bound; once the registry is back, reads recover.
func TestRegistryStoppedMidRead(t *testing.T) {
	reg := regtest.Start(t, regtest.KindDistribution)
	data := randBytes(2, 8<<20)
	dgst := pushBlob(t, reg, "test/stop", data)
	ctx := context.Background()
	b, err := Open(ctx, http.DefaultClient, reg.Ref("test/stop", ""), dgst, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	rc, err := b.FetchRange(ctx, 0, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 64<<10)
	if _, err := io.ReadFull(rc, head); err != nil {
		t.Fatal(err)
	}
	reg.Stop()
	start := time.Now()
	_, err = io.Copy(io.Discard, rc)
	rc.Close()
	// The body may have been buffered whole before the stop; only a failure
	// to read must be prompt. Either way a fresh read must now fail.
	if err == nil {
		_, err = readRange(ctx, b, 100, 200)
	}
	if err == nil {
		t.Fatal("read from a stopped registry succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("failure took %v, want < 3s", d)
	}
	reg.Restart()
	got, err := readRange(ctx, b, 4096, 1<<20)
	if err != nil || !bytes.Equal(got, data[4096:1<<20]) {
		t.Fatalf("read after restart: %v", err)
	}
}

func TestContextCancelStopsFetch(t *testing.T) {
	if os.Getenv(regtest.EnvToolsBin) == "" {
		t.Log("registry binaries come from $" + regtest.EnvToolsBin)
	}
	reg := regtest.Start(t, regtest.KindDistribution)
	data := randBytes(3, 1<<20)
	dgst := pushBlob(t, reg, "test/cancel", data)
	b, err := Open(context.Background(), http.DefaultClient, reg.Ref("test/cancel", ""), dgst, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := readRange(ctx, b, 0, 1000); !errors.Is(err, context.Canceled) {
		t.Fatalf("fetch with cancelled context: %v", err)
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-0/1", "bytes 5-9/*", "bytes 9-5/10", "bytes -1-2/3", "bytes 1-2", fmt.Sprint("bytes 0-", int64(1)<<62, "/9")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		first, last, total, err := parseContentRange(s)
		if err != nil {
			return
		}
		if first < 0 || last < first || (total != -1 && total <= last) {
			t.Fatalf("%q accepted as %d-%d/%d", s, first, last, total)
		}
	})
}

// TestMissingCredentialsNotRetried: a registry that demands a password the
// client does not have fails the open at once; retrying cannot help.
func TestMissingCredentialsNotRetried(t *testing.T) {
	reg := regtest.StartWithAuth(t, "reader", "s3cret")
	dgst := pushBlob(t, reg, "test/private", randBytes(3, 4096))
	before := len(reg.Requests(t))
	client := &auth.Client{Client: http.DefaultClient}
	_, err := Open(context.Background(), client, reg.Ref("test/private", ""), dgst, fastOpts())
	if !errors.Is(err, auth.ErrBasicCredentialNotFound) {
		t.Fatalf("open without credentials: %v, want ErrBasicCredentialNotFound", err)
	}
	if n := len(reg.Requests(t)) - before; n > 2 {
		t.Fatalf("open without credentials sent %d requests; want it to give up at once", n)
	}
}

// TestProbeConnectionReused checks that the first range request after Open
// reuses the probe's connection: a probe that closed its one-byte body
// unread took the connection with it, and a layer's first span waited for a
// new one.
func TestProbeConnectionReused(t *testing.T) {
	reg := regtest.Start(t, regtest.KindDistribution)
	data := randBytes(3, 1<<20)
	dgst := pushBlob(t, reg, "test/probe", data)
	var dials atomic.Int32
	tr := NewTransport()
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return dial(ctx, network, addr)
	}
	client := &auth.Client{Client: &http.Client{Transport: tr}}
	ctx := context.Background()
	b, err := Open(ctx, client, reg.Ref("test/probe", ""), dgst, fastOpts())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if got, err := readRange(ctx, b, 4096, 8192); err != nil || !bytes.Equal(got, data[4096:8192]) {
		t.Fatalf("range after the probe: %d bytes, %v", len(got), err)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d connections for the probe and one range request, want 1", n)
	}
}
