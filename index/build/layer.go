package build

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/content"

	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/ztoc"
)

// Docker layer media types (image-spec has only the OCI ones).
const (
	mediaTypeDockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	mediaTypeDockerLayerTar  = "application/vnd.docker.image.rootfs.diff.tar"
)

// progressStep is how many bytes pass between two progress reports.
const progressStep = 1 << 20

// skipReason says why a layer gets no zTOC before reading it, or "" when
// it is a candidate. The rules follow the AWS builder (§1.5): prefetch
// artifacts and small layers are skipped; the compression is read from the
// media type and only gzip and plain tar can be indexed.
func skipReason(layer ocispec.Descriptor, minSize int64) string {
	if layer.MediaType == index.MediaTypePrefetch {
		return "prefetch artifact"
	}
	if layer.Size < minSize {
		return fmt.Sprintf("smaller than the minimum layer size (%d < %d)", layer.Size, minSize)
	}
	mt := layer.MediaType
	switch {
	case mt == mediaTypeDockerLayerGzip, mt == mediaTypeDockerLayerTar:
		return ""
	case strings.HasSuffix(mt, "+encrypted"):
		return "encrypted layer"
	case strings.HasSuffix(mt, ".tar+gzip"), strings.HasSuffix(mt, ".tar"):
		return ""
	case strings.HasSuffix(mt, "+zstd"):
		return "zstd layer (cannot be indexed)"
	default:
		return fmt.Sprintf("media type %q cannot be indexed", mt)
	}
}

// layerBuilder builds the zTOCs of one image manifest's layers.
type layerBuilder struct {
	src  content.Fetcher
	dst  content.Storage // receives the zTOC blobs
	opts Options
	// copyLayers also streams every indexed layer into dst (Convert), so a
	// layer is read from the source once, not once to index and once to copy.
	copyLayers bool
	// where names the source in errors ("registry 127.0.0.1:5000/app").
	where string
}

// buildAll builds the zTOC of every eligible layer of m, pushes the zTOC
// blobs to b.dst and returns their descriptors in layer order.
func (b *layerBuilder) buildAll(ctx context.Context, manifest ocispec.Descriptor, m *ocispec.Manifest) ([]ocispec.Descriptor, []Skipped, error) {
	ztocs := make([]*ocispec.Descriptor, len(m.Layers))
	reasons := make([]string, len(m.Layers))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(b.opts.jobs())
	for i, layer := range m.Layers {
		if r := skipReason(layer, b.opts.MinLayerSize); r != "" {
			reasons[i] = r
			b.opts.report(LayerProgress{Manifest: manifest, Layer: layer, Done: true, Skipped: r})
			continue
		}
		g.Go(func() error {
			d, r, err := b.buildOne(gctx, manifest, layer)
			ztocs[i], reasons[i] = d, r
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	var out []ocispec.Descriptor
	var skipped []Skipped
	for i, d := range ztocs {
		if d != nil {
			out = append(out, *d)
		} else {
			skipped = append(skipped, Skipped{Layer: m.Layers[i], Reason: reasons[i]})
		}
	}
	return out, skipped, nil
}

// buildOne streams one layer into the zTOC builder, verifying its size and
// digest on the way, and pushes the zTOC. It returns a nil descriptor and a
// reason when the layer's content turns out not to be indexable.
func (b *layerBuilder) buildOne(ctx context.Context, manifest, layer ocispec.Descriptor) (*ocispec.Descriptor, string, error) {
	rc, err := b.src.Fetch(ctx, layer)
	if err != nil {
		return nil, "", fmt.Errorf("fetch layer %s from %s: %w", layer.Digest, b.where, err)
	}
	defer rc.Close()
	vr := content.NewVerifyReader(rc, layer)
	counter := &progressReader{r: vr, report: func(n int64) {
		b.opts.report(LayerProgress{Manifest: manifest, Layer: layer, Read: n})
	}}
	var r io.Reader = counter
	var tee *teePush
	if b.copyLayers {
		if tee, err = startTeePush(ctx, b.dst, layer); err != nil {
			return nil, "", err
		}
		if tee != nil {
			r = io.TeeReader(r, tee.pw)
			defer tee.abort()
		}
	}
	z, buildErr := ztoc.Build(ctx, r, ztoc.BuildOptions{SpanSize: b.opts.spanSize(), BuildToolIdentifier: b.opts.buildTool()})
	reason := ""
	if errors.Is(buildErr, ztoc.ErrUnindexable) {
		reason, buildErr = "content cannot be indexed: "+buildErr.Error(), nil
	}
	if buildErr != nil {
		return nil, "", fmt.Errorf("build zTOC of layer %s from %s: %w", layer.Digest, b.where, buildErr)
	}
	// Drain what the builder left (tar padding, an unindexable layer) so the
	// digest covers the whole blob and the copy is complete.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return nil, "", fmt.Errorf("read layer %s from %s: %w", layer.Digest, b.where, err)
	}
	if err := vr.Verify(); err != nil {
		return nil, "", fmt.Errorf("verify layer %s from %s: %w", layer.Digest, b.where, err)
	}
	if tee != nil {
		if err := tee.finish(); err != nil {
			return nil, "", fmt.Errorf("copy layer %s: %w", layer.Digest, err)
		}
	}
	b.opts.report(LayerProgress{Manifest: manifest, Layer: layer, Read: counter.n, Done: true, Skipped: reason})
	if z == nil {
		return nil, reason, nil
	}
	d, err := b.pushZtoc(ctx, layer, z)
	return d, "", err
}

// pushZtoc encodes z and stores it in b.dst with the annotations that link
// it to its layer.
func (b *layerBuilder) pushZtoc(ctx context.Context, layer ocispec.Descriptor, z *ztoc.Ztoc) (*ocispec.Descriptor, error) {
	buf, err := ztoc.Marshal(z)
	if err != nil {
		return nil, fmt.Errorf("encode zTOC of layer %s: %w", layer.Digest, err)
	}
	d := content.NewDescriptorFromBytes(index.MediaTypeZtoc, buf)
	d.Annotations = map[string]string{
		index.AnnotationLayerDigest:    layer.Digest.String(),
		index.AnnotationLayerMediaType: layer.MediaType,
		index.AnnotationSpanSize:       strconv.FormatInt(b.opts.spanSize(), 10),
	}
	if err := pushIfAbsent(ctx, b.dst, d, buf); err != nil {
		return nil, fmt.Errorf("push zTOC of layer %s: %w", layer.Digest, err)
	}
	return &d, nil
}

// pushIfAbsent pushes a small blob or manifest unless the store has it.
func pushIfAbsent(ctx context.Context, dst content.Storage, d ocispec.Descriptor, buf []byte) error {
	if ok, err := dst.Exists(ctx, d); err == nil && ok {
		return nil
	}
	return dst.Push(ctx, d, bytes.NewReader(buf))
}

// progressReader counts bytes and reports every progressStep of them.
type progressReader struct {
	r      io.Reader
	n      int64
	last   int64
	report func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.n-p.last >= progressStep {
		p.last = p.n
		p.report(p.n)
	}
	return n, err
}

// teePush streams a blob into a store while another reader consumes it.
type teePush struct {
	pw   *io.PipeWriter
	done chan error
}

// startTeePush starts pushing layer into dst from a pipe; it returns nil
// when dst already holds the layer.
func startTeePush(ctx context.Context, dst content.Storage, layer ocispec.Descriptor) (*teePush, error) {
	ok, err := dst.Exists(ctx, layer)
	if err != nil {
		return nil, fmt.Errorf("check layer %s at destination: %w", layer.Digest, err)
	}
	if ok {
		return nil, nil
	}
	pr, pw := io.Pipe()
	t := &teePush{pw: pw, done: make(chan error, 1)}
	go func() {
		err := dst.Push(ctx, layer, pr)
		// Unblock the writer whatever happened: a push that stopped early
		// must fail the tee, not hang it.
		if err != nil {
			pr.CloseWithError(err)
		} else {
			pr.CloseWithError(io.ErrClosedPipe)
		}
		t.done <- err
	}()
	return t, nil
}

// finish ends the stream and waits for the push to complete.
func (t *teePush) finish() error {
	t.pw.Close()
	err := <-t.done
	t.done <- err // abort may still wait
	return err
}

// abort cancels an unfinished push and waits for its goroutine.
func (t *teePush) abort() {
	t.pw.CloseWithError(errors.New("layer copy aborted"))
	err := <-t.done
	t.done <- err
}
