package snapshot

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
)

// writeMetadata creates root/metadata.db holding a chain of committed
// snapshots with labels, enough for several pages, and returns its path.
func writeMetadata(t *testing.T, root string) string {
	t.Helper()
	path := filepath.Join(root, "metadata.db")
	ms, err := storage.NewMetaStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	ctx := context.Background()
	parent := ""
	for i := range 200 {
		key, name := "active-"+string(rune('a'+i%26))+strings.Repeat("x", i), "layer-"+strings.Repeat("y", i)
		labels := map[string]string{"containerd.io/snapshot/cri.image-ref": strings.Repeat("z", 100)}
		if err := ms.WithTransaction(ctx, true, func(ctx context.Context) error {
			if _, err := storage.CreateSnapshot(ctx, snapshots.KindActive, key, parent, snapshots.WithLabels(labels)); err != nil {
				return err
			}
			_, err := storage.CommitActive(ctx, key, name, snapshots.Usage{})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		parent = name
	}
	return path
}

// metaField reads a little-endian uint64 of the newer of the two bbolt meta
// pages (page 0 and 1) at offset off within the page.
func metaField(t *testing.T, b []byte, off int) uint64 {
	t.Helper()
	const pageSize, txidOff = 4096, 64
	m0, m1 := b[:pageSize], b[pageSize:2*pageSize]
	if binary.LittleEndian.Uint64(m1[txidOff:]) > binary.LittleEndian.Uint64(m0[txidOff:]) {
		m0 = m1
	}
	return binary.LittleEndian.Uint64(m0[off:])
}

// TestCorruptMetadataIsAnError: a metadata.db with damaged pages stops New
// with an error naming the file and the recovery, where bbolt used to
// panic (a crash loop under systemd's Restart=always).
func TestCorruptMetadataIsAnError(t *testing.T) {
	const pageSize = 4096
	cases := map[string]func(t *testing.T, b []byte){
		// The root bucket's page: bbolt opens the file, then panics or
		// errs when it reads the bucket.
		"root bucket page": func(t *testing.T, b []byte) {
			const rootOff = 16 + 16 // page header, then magic/version/pageSize/flags
			pg := int(metaField(t, b, rootOff))
			fill(b[pg*pageSize : (pg+1)*pageSize])
		},
		// Every page after the two metas, freelist included: bbolt
		// panics while opening.
		"every data page": func(t *testing.T, b []byte) { fill(b[2*pageSize:]) },
		// Garbage in the middle of the file, as a torn write leaves it.
		"middle of the file": func(t *testing.T, b []byte) {
			mid := len(b) / 2
			fill(b[mid-pageSize : mid+pageSize])
		},
	}
	for name, corrupt := range cases {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			path := writeMetadata(t, root)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			corrupt(t, b)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			var sn *Snapshotter
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("New panicked on a corrupt metadata.db: %v", r)
					}
				}()
				sn, err = New(context.Background(), root, failingFS{})
			}()
			if err == nil {
				sn.Close()
				t.Fatal("New accepted a corrupt metadata.db")
			}
			t.Log(err)
			if !errors.Is(err, ErrCorruptMetadata) {
				t.Errorf("New = %v, want ErrCorruptMetadata", err)
			}
			for _, want := range []string{path, "mv " + root + " " + root + ".corrupt", "pull their images again"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not say %q:\n%v", want, err)
				}
			}
		})
	}
}

// TestSoundMetadataOpens: the check passes a healthy file, and the
// snapshots in it are there.
func TestSoundMetadataOpens(t *testing.T) {
	root := t.TempDir()
	writeMetadata(t, root)
	sn, err := New(context.Background(), root, failingFS{})
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	if info, err := sn.Stat(context.Background(), "layer-"+strings.Repeat("y", 199)); err != nil || info.Kind != snapshots.KindCommitted {
		t.Errorf("Stat of the top layer = %+v, %v", info, err)
	}
}

// fill overwrites b with bytes from a fixed seed, so that a failure
// repeats.
func fill(b []byte) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}
