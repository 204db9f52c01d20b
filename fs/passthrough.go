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
// without, and the other way round; fs/layer keeps to that by asking
// LocalFile only when the file has no open handle. So a file opened before
// the layer was complete is read through FUSE until all its handles are
// closed, and its next open is served by passthrough.
//
// Disk use: a materialised file is a second copy of bytes the span cache
// already holds, and it counts toward no cache bound
// (ociseek_fs_passthrough_copy_bytes shows it). It is bounded by the
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
	met    *metrics

	// ctx bounds the copies; release cancels it and waits on wg.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	group  singleflight.Group // one copy per file at a time

	mu       sync.Mutex
	dir      string         // the mount's own dir, made by the first copy
	released bool           // no copies may start
	copied   map[int64]bool // by data offset: true once copied, false once a copy failed
	bytes    int64          // size of the copies in dir
}

var (
	_ layer.Reader       = (*localFiles)(nil)
	_ layer.Verifier     = (*localFiles)(nil)
	_ layer.LocalFiler   = (*localFiles)(nil)
	_ layer.OpenObserver = (*localFiles)(nil)
)

// newLocalFiles wraps mgr for a mount whose materialised files go in a new
// directory under parent, named after layer. lg receives copy failures;
// met counts opens and copies.
func newLocalFiles(mgr *span.Manager, parent, layer string, lg *log.Entry, met *metrics) *localFiles {
	ctx, cancel := context.WithCancel(context.Background())
	return &localFiles{mgr: mgr, parent: parent, prefix: layer, log: lg, met: met, ctx: ctx, cancel: cancel,
		copied: map[int64]bool{}}
}

// ReadAt reads the layer's tar bytes through the span manager.
func (l *localFiles) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return l.mgr.ReadAt(ctx, p, off)
}

// VerifyEntry checks e's tar header through the span manager.
func (l *localFiles) VerifyEntry(ctx context.Context, e *ztoc.FileMetadata) error {
	return l.mgr.VerifyEntry(ctx, e)
}

// Opened counts the opens fs/layer offered for passthrough.
func (l *localFiles) Opened(e *ztoc.FileMetadata, passthrough bool) {
	if passthrough {
		l.met.passthroughOpens.Inc()
	}
}

// LocalFile returns e's bytes as a local file once e has been copied, and
// copies it first when the layer is complete (every span and the layer
// digest verified) and not failed; that open waits for the copy (about one
// read of the file from the span cache; not cut short by ctx, as
// concurrent opens share it). A copy that failed (full disk) is not tried
// again: e stays on FUSE for as long as the layer is mounted.
func (l *localFiles) LocalFile(ctx context.Context, e *ztoc.FileMetadata) (*os.File, bool) {
	if e.Type != ztoc.TypeReg || e.UncompressedSize <= 0 {
		return nil, false
	}
	copied, tried := l.state(e)
	if !tried {
		if !l.mgr.Complete() || l.mgr.Failed() != nil {
			return nil, false
		}
		copied = l.ensureCopy(e)
	}
	if !copied {
		return nil, false
	}
	f, err := l.open(e)
	if err != nil {
		// Rare (out of descriptors): this open is served through FUSE.
		l.log.WithError(err).Warn("open the passthrough copy of a layer file")
		return nil, false
	}
	return f, true
}

// state reports whether e was copied, and whether a copy was tried.
func (l *localFiles) state(e *ztoc.FileMetadata) (copied, tried bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	copied, tried = l.copied[e.UncompressedOffset]
	return copied, tried
}

// ensureCopy copies e unless that was tried; concurrent callers share one
// copy. It reports whether the copy is in place.
func (l *localFiles) ensureCopy(e *ztoc.FileMetadata) bool {
	_, err, _ := l.group.Do(fileKey(e), func() (any, error) {
		if copied, tried := l.state(e); tried { // a flight that just ended tried
			if !copied {
				return nil, errors.New("copy failed before")
			}
			return nil, nil
		}
		if !l.start() {
			return nil, errFilesClosed
		}
		defer l.wg.Done()
		err := l.copyFile(e)
		l.record(e, err)
		return nil, err
	})
	return err == nil
}

// record notes the outcome of e's copy, unless the layer is being
// released (its copies are going, and a cancelled copy is no failure).
func (l *localFiles) record(e *ztoc.FileMetadata, err error) {
	if err != nil && l.ctx.Err() != nil {
		return
	}
	l.mu.Lock()
	l.copied[e.UncompressedOffset] = err == nil
	if err == nil {
		l.bytes += e.UncompressedSize
	}
	l.mu.Unlock()
	if err != nil {
		l.met.copyFailures.Inc()
		l.log.WithError(err).Warn("copy a file of a complete layer for passthrough; its reads stay on FUSE")
		return
	}
	l.met.copies.Inc()
	l.met.copyBytes.Add(float64(e.UncompressedSize))
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
	defer l.mu.Unlock()
	if l.dir == "" {
		return nil
	}
	if err := os.RemoveAll(l.dir); err != nil {
		return fmt.Errorf("remove passthrough copies: %w", err)
	}
	l.met.copyBytes.Sub(float64(l.bytes))
	l.bytes = 0
	return nil
}
