package span

import (
	"context"
	"fmt"
	"hash"
	"io"

	"github.com/ociseek/ociseek/ztoc"
)

// maxHeaderRegion bounds the tar header bytes read to verify one entry (a
// header with PAX records and long names is a few KiB; a hostile zTOC could
// claim gigabytes).
const maxHeaderRegion = 1 << 20

// passState is the progress of the completion pass (pass.go); guarded by
// Manager.mu. The pass itself runs in a goroutine reading from pipe; the
// steps (FetchNext, never run concurrently by fs/bgfetch) feed it.
type passState struct {
	fed    int64     // blob bytes fetched and fed to the verifier so far
	hasher hash.Hash // layer digest over the bytes fed
	pipe   *io.PipeWriter
	result chan error   // the verifier's outcome, once
	ahead  *aheadWindow // full-speed: the bytes fetched ahead of the pass
	done   bool
}

// Complete reports whether the completion pass has verified the whole
// layer.
func (m *Manager) Complete() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pass.done
}

// VerifyEntry checks, once per entry, that the tar header in front of e's
// data describes e (name, type, size, mode, owners, times, link, devices,
// xattrs). A mismatch fails the layer. fs/layer calls it on a file's first
// open.
func (m *Manager) VerifyEntry(ctx context.Context, e *ztoc.FileMetadata) error {
	if err := m.Failed(); err != nil {
		return err
	}
	if m.Complete() {
		return nil // the pass compared every TOC entry with the stream
	}
	if _, ok := m.checked.Load(e.UncompressedOffset); ok {
		return nil
	}
	m.hdrOnce.Do(m.loadHeaderOffsets)
	if m.hdrErr != nil {
		return m.fail(ctx, KindTarHeader, m.hdrErr)
	}
	hdr, ok := m.hdrOffsets[e.UncompressedOffset]
	if !ok {
		return fmt.Errorf("verify %q: no TOC entry has data at %d", e.Name, e.UncompressedOffset)
	}
	size := e.UncompressedOffset - hdr
	if size > maxHeaderRegion {
		return m.fail(ctx, KindTarHeader, fmt.Errorf("verify %q: header region of %d bytes: %w", e.Name, size, ztoc.ErrInvalid))
	}
	buf := make([]byte, size)
	if _, err := m.ReadAt(ctx, buf, hdr); err != nil {
		return fmt.Errorf("verify %q: read header: %w", e.Name, err)
	}
	if err := ztoc.VerifyHeader(e, buf); err != nil {
		return m.fail(ctx, KindTarHeader, err)
	}
	m.checked.Store(e.UncompressedOffset, struct{}{})
	return nil
}

func (m *Manager) loadHeaderOffsets() {
	offs, err := m.z.HeaderOffsets()
	if err != nil {
		m.hdrErr = err
		return
	}
	m.hdrOffsets = make(map[int64]int64, len(offs))
	for i, h := range offs {
		m.hdrOffsets[m.z.TOC[i].UncompressedOffset] = h
	}
}

// readCompressed reads the blob bytes [start, end) whole.
func (m *Manager) readCompressed(ctx context.Context, start, end int64, reason string) ([]byte, error) {
	rc, err := m.blob.FetchRange(ctx, start, end)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	buf := make([]byte, end-start) // bounded by MaxSpanBytes (plus the byte a span may share)
	n, err := io.ReadFull(rc, buf)
	m.metrics.BytesFetched.WithLabelValues(reason).Add(float64(n))
	if err != nil {
		return nil, fmt.Errorf("read [%d,%d): %w", start, end, err)
	}
	return buf, nil
}
