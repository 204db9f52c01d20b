package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/containerd/log"
	"golang.org/x/sync/singleflight"

	"github.com/ociseek/ociseek/fs/layer"
	"github.com/ociseek/ociseek/fs/span"
	"github.com/ociseek/ociseek/ztoc"
)

// FUSE passthrough lets the kernel serve a file's reads from a local file
// without a round trip to this process; fs/layer does the kernel side when
// its Reader is a layer.LocalFiler. The span cache holds spans, not files,
// so a file is materialised: copied once, through the span manager, into a
// file of its own under the mount's directory in <root>/files.
//
// The kernel refuses (EIO) to open a file for passthrough while it is open
// without, and the other way round. fs/layer does not tell us when its
// handles close, so the choice is made once per file and mount, on the
// file's first open, and kept: a file first opened before the layer was
// complete is read through FUSE for as long as it stays mounted.
//
// Disk use: a materialised file is a second copy of bytes the span cache
// already holds, and it counts toward no cache bound. It is bounded by the
// regular files opened in complete layers, and freed when the layer is
// unmounted (or, after a crash or Detach, when the next FS starts: nothing
// there survives a restart, which is also why it is never fsynced).
const (
	// filesDirName is the directory under the FS root holding every
	// mount's materialised files.
	filesDirName = "files"
	// copyChunk is the size of each read from the span manager.
	copyChunk = 1 << 20
)

// errFilesClosed reports a copy asked for after the layer was released.
var errFilesClosed = errors.New("layer released")

// localFiles is the layer.Reader fs gives fs/layer: it reads through the
// layer's span manager and, once the whole layer is fetched and verified,
// offers each regular file as a local file for FUSE passthrough. It
// forwards VerifyEntry, so fs/layer's first-open check still runs.
type localFiles struct {
	mgr    *span.Manager
	parent string // <root>/files
	prefix string // the layer digest's encoded part, for the mount's dir
	log    *log.Entry

	// ctx bounds the copies; release cancels it and waits on wg.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	group  singleflight.Group // one copy per file at a time

	mu       sync.Mutex
	dir      string         // the mount's own dir, made by the first copy
	released bool           // no copies may start
	local    map[int64]bool // the choice per file, by data offset: true for passthrough
}

var (
	_ layer.Reader     = (*localFiles)(nil)
	_ layer.Verifier   = (*localFiles)(nil)
	_ layer.LocalFiler = (*localFiles)(nil)
)

// newLocalFiles wraps mgr for a mount whose materialised files go in a new
// directory under parent, named after layer. lg receives copy failures.
func newLocalFiles(mgr *span.Manager, parent, layer string, lg *log.Entry) *localFiles {
	ctx, cancel := context.WithCancel(context.Background())
	return &localFiles{mgr: mgr, parent: parent, prefix: layer, log: lg, ctx: ctx, cancel: cancel,
		local: map[int64]bool{}}
}

// ReadAt reads the layer's tar bytes through the span manager.
func (l *localFiles) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return l.mgr.ReadAt(ctx, p, off)
}

// VerifyEntry checks e's tar header through the span manager.
func (l *localFiles) VerifyEntry(ctx context.Context, e *ztoc.FileMetadata) error {
	return l.mgr.VerifyEntry(ctx, e)
}

// LocalFile returns e's bytes as a local file when e is chosen for
// passthrough. The choice is made on e's first open: passthrough if the
// layer is complete (every span and the layer digest verified), not
// failed, and the copy succeeds; that open waits for the copy (about one
// read of the file from the span cache; not cut short by ctx, as every
// concurrent open must get the same answer). A failed copy (full disk)
// leaves e on FUSE.
func (l *localFiles) LocalFile(ctx context.Context, e *ztoc.FileMetadata) (*os.File, bool) {
	if e.Type != ztoc.TypeReg || e.UncompressedSize <= 0 {
		return nil, false
	}
	local, decided := l.choice(e)
	if !decided {
		local = l.decide(e)
	}
	if !local {
		return nil, false
	}
	f, err := l.open(e)
	if err != nil {
		// Rare (out of descriptors); the kernel fails this open (EIO)
		// if other opens of e use passthrough.
		l.log.WithError(err).Warn("open the passthrough copy of a layer file")
		return nil, false
	}
	return f, true
}

// choice returns the choice made for e, if any.
func (l *localFiles) choice(e *ztoc.FileMetadata) (local, decided bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	local, decided = l.local[e.UncompressedOffset]
	return local, decided
}

// decide makes the choice for e; concurrent first opens share one copy.
func (l *localFiles) decide(e *ztoc.FileMetadata) bool {
	var err error
	if !l.mgr.Complete() || l.mgr.Failed() != nil {
		err = errors.New("layer not complete")
	} else {
		_, err, _ = l.group.Do(fileKey(e), func() (any, error) {
			if _, decided := l.choice(e); decided {
				return nil, nil // a flight that just ended chose
			}
			if !l.start() {
				return nil, errFilesClosed
			}
			defer l.wg.Done()
			if err := l.copyFile(e); err != nil {
				return nil, err
			}
			l.mu.Lock()
			defer l.mu.Unlock()
			if _, decided := l.local[e.UncompressedOffset]; !decided {
				l.local[e.UncompressedOffset] = true // before the next flight looks
			}
			return nil, nil
		})
		if err != nil && l.ctx.Err() == nil {
			l.log.WithError(err).Warn("copy a file of a complete layer for passthrough; its reads stay on FUSE")
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if local, decided := l.local[e.UncompressedOffset]; decided {
		return local
	}
	l.local[e.UncompressedOffset] = err == nil
	return err == nil
}

// fileKey names e's copy: its data offset is unique in the layer, and
// hardlinks share their target's entry, hence its copy.
func fileKey(e *ztoc.FileMetadata) string {
	return strconv.FormatInt(e.UncompressedOffset, 10)
}

// open opens e's copy, checking its size.
func (l *localFiles) open(e *ztoc.FileMetadata) (*os.File, error) {
	l.mu.Lock()
	dir := l.dir
	l.mu.Unlock()
	f, err := os.Open(filepath.Join(dir, fileKey(e)))
	if err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err != nil || st.Size() != e.UncompressedSize {
		f.Close()
		return nil, fmt.Errorf("passthrough copy of %s is not %d bytes (%v)", e.Name, e.UncompressedSize, err)
	}
	return f, nil
}

// start registers a copy with wg, unless the layer is released.
func (l *localFiles) start() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return false
	}
	l.wg.Add(1)
	return true
}

// copyFile copies e's bytes into the mount's dir: a temporary file,
// size-checked, renamed into place so that no open sees a partial copy.
func (l *localFiles) copyFile(e *ztoc.FileMetadata) (err error) {
	dir, err := l.ensureDir()
	if err != nil {
		return err
	}
	key := fileKey(e)
	tmp, err := os.CreateTemp(dir, ".tmp-"+key+"-")
	if err != nil {
		return fmt.Errorf("copy %s for passthrough: %w", e.Name, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	buf := make([]byte, min(copyChunk, e.UncompressedSize))
	for off := int64(0); off < e.UncompressedSize; {
		n := min(int64(len(buf)), e.UncompressedSize-off)
		got, err := l.mgr.ReadAt(l.ctx, buf[:n], e.UncompressedOffset+off)
		if int64(got) < n {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("copy %s for passthrough: read %d bytes at %d: %w", e.Name, n, off, err)
		}
		if _, err := tmp.Write(buf[:n]); err != nil {
			return fmt.Errorf("copy %s for passthrough: %w", e.Name, err)
		}
		off += n
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("copy %s for passthrough: %w", e.Name, err)
	}
	if st, err := os.Stat(tmp.Name()); err != nil || st.Size() != e.UncompressedSize {
		return fmt.Errorf("copy %s for passthrough: copy is not %d bytes (%v)", e.Name, e.UncompressedSize, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, key)); err != nil {
		return fmt.Errorf("copy %s for passthrough: %w", e.Name, err)
	}
	return nil
}

// ensureDir returns the mount's directory, making it on first use. Each
// mount has its own, so that unmounting one of two mounts of a layer
// leaves the other's copies alone.
func (l *localFiles) ensureDir() (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dir != "" {
		return l.dir, nil
	}
	if err := os.MkdirAll(l.parent, 0o700); err != nil {
		return "", fmt.Errorf("make passthrough files dir: %w", err)
	}
	dir, err := os.MkdirTemp(l.parent, l.prefix+"-")
	if err != nil {
		return "", fmt.Errorf("make passthrough files dir: %w", err)
	}
	l.dir = dir
	return dir, nil
}

// release stops the copies, waits for them and removes the mount's
// copies. Files the kernel still holds open for passthrough stay readable
// (unlinked) until closed.
func (l *localFiles) release() error {
	l.mu.Lock()
	l.released = true
	l.mu.Unlock()
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	dir := l.dir
	l.mu.Unlock()
	if dir == "" {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove passthrough copies: %w", err)
	}
	return nil
}
