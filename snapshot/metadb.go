package snapshot

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/containerd/containerd/v2/core/snapshots/storage"
	bolt "go.etcd.io/bbolt"
)

// ErrCorruptMetadata is returned by New when metadata.db cannot be read:
// bbolt refused it or panicked on a damaged page. The error says how to
// recover.
var ErrCorruptMetadata = errors.New("snapshot metadata is corrupt")

// maxCheckErrors bounds how many of bbolt's consistency errors the start
// reports: one proves the damage, and a badly damaged file yields one per
// page.
const maxCheckErrors = 5

// openMetaStore opens the metastore at path and checks every page of it
// before anything else reads it. bbolt trusts its pages and panics on a
// damaged one (on open, when it reads the freelist, or on the first read of
// a bucket); under systemd's Restart=always that is a crash loop with a
// stack trace instead of a reason. The panic is recovered here, in the
// goroutine that opens and first reads the file, and becomes an error that
// names the file and the way out.
func openMetaStore(ctx context.Context, path string) (_ *storage.MetaStore, err error) {
	ms, err := storage.NewMetaStore(path)
	if err != nil {
		return nil, fmt.Errorf("open snapshot metadata %s: %w", path, err)
	}
	defer func() {
		if r := recover(); r != nil {
			// bbolt panicked half-way through an open or a read; the
			// process stops on this error, so nothing more is released.
			err = corruptMetadata(path, fmt.Errorf("bbolt: %v", r))
		}
	}()
	ctx, t, err := ms.TransactionContext(ctx, false)
	if err != nil {
		ms.Close()
		// bbolt's own checks (magic, version, checksums of both meta
		// pages) fail here rather than panic.
		if errors.Is(err, bolt.ErrInvalid) || errors.Is(err, bolt.ErrChecksum) || errors.Is(err, bolt.ErrVersionMismatch) {
			return nil, corruptMetadata(path, err)
		}
		return nil, fmt.Errorf("open snapshot metadata %s: %w", path, err)
	}
	defer t.Rollback()
	tx, ok := t.(*bolt.Tx)
	if !ok {
		// containerd changed its store; skip the check rather than refuse.
		return ms, nil
	}
	var errs []error
	for e := range tx.Check() {
		// Drain every error so that Check's goroutine ends; keep a few.
		if len(errs) < maxCheckErrors {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		t.Rollback()
		ms.Close()
		return nil, corruptMetadata(path, errors.Join(errs...))
	}
	return ms, nil
}

// corruptMetadata is the error for a damaged metadata file at path: what is
// wrong, and what an operator does about it.
func corruptMetadata(path string, cause error) error {
	dir := filepath.Dir(path)
	return fmt.Errorf("%w: %s: %w; "+
		"to recover: stop the daemon, unmount the ociseek layers still mounted under %s "+
		"(grep %s /proc/self/mountinfo), and move that directory aside (mv %s %s.corrupt); "+
		"the next start creates a new, empty %s. "+
		"That loses the record of every snapshot of this snapshotter (image layers and container "+
		"root file systems): remove the containers that used them and pull their images again, "+
		"since containerd still lists snapshots that no longer exist",
		ErrCorruptMetadata, path, cause, dir, dir, dir, dir, path)
}
