package crikeychain

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/containerd/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Proxy is the CRI ImageService the daemon serves: every call goes to
// containerd's unchanged, and PullImage's credentials are kept in the
// Keychain first, so that the layers containerd asks the snapshotter to
// prepare during the pull are already readable with them.
type Proxy struct {
	runtime.UnimplementedImageServiceServer // never reached: every method is forwarded

	upstream runtime.ImageServiceClient
	keys     *Keychain
}

// NewProxy returns a Proxy that forwards to upstream and keeps
// credentials in keys.
func NewProxy(upstream runtime.ImageServiceClient, keys *Keychain) *Proxy {
	return &Proxy{upstream: upstream, keys: keys}
}

// Dial returns a client of the CRI ImageService on the unix socket at
// path, and its connection for Close. It does not connect yet: the first
// call does, and a later one connects again if containerd restarted, so
// the daemon may start before containerd.
func Dial(path string) (runtime.ImageServiceClient, io.Closer, error) {
	target := path
	if !strings.HasPrefix(target, "unix:") {
		target = "unix://" + path
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("CRI image service at %s: %w", path, err)
	}
	return runtime.NewImageServiceClient(conn), conn, nil
}

// PullImage keeps the request's credentials for the image's repository,
// then forwards it. When the pull fails the credentials are forgotten
// again (they may be why it failed), unless a later pull replaced them.
func (p *Proxy) PullImage(ctx context.Context, r *runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
	image := r.GetImage().GetImage()
	token, kinds, err := p.keys.Store(image, r.GetAuth())
	if err != nil {
		// Not fatal to the pull: containerd may still pull it, and the
		// daemon then falls back to its Docker config.
		log.G(ctx).WithError(err).WithField("image", image).Warn("CRI pull: credentials not kept")
	} else if len(kinds) > 0 {
		log.G(ctx).WithField("image", image).WithField("credentials", strings.Join(kinds, ", ")).Debug("CRI pull: credentials kept for lazy reads")
	}
	resp, err := p.upstream.PullImage(ctx, r)
	if err != nil {
		p.keys.Forget(image, token)
	}
	return resp, err
}

// ListImages forwards the call.
func (p *Proxy) ListImages(ctx context.Context, r *runtime.ListImagesRequest) (*runtime.ListImagesResponse, error) {
	return p.upstream.ListImages(ctx, r)
}

// ImageStatus forwards the call.
func (p *Proxy) ImageStatus(ctx context.Context, r *runtime.ImageStatusRequest) (*runtime.ImageStatusResponse, error) {
	return p.upstream.ImageStatus(ctx, r)
}

// RemoveImage forwards the call. Credentials stay until they expire:
// other tags of the repository may still be mounted lazily.
func (p *Proxy) RemoveImage(ctx context.Context, r *runtime.RemoveImageRequest) (*runtime.RemoveImageResponse, error) {
	return p.upstream.RemoveImage(ctx, r)
}

// ImageFsInfo forwards the call.
func (p *Proxy) ImageFsInfo(ctx context.Context, r *runtime.ImageFsInfoRequest) (*runtime.ImageFsInfoResponse, error) {
	return p.upstream.ImageFsInfo(ctx, r)
}

// StreamImages forwards the stream, message by message.
func (p *Proxy) StreamImages(r *runtime.StreamImagesRequest, out grpc.ServerStreamingServer[runtime.StreamImagesResponse]) error {
	in, err := p.upstream.StreamImages(out.Context(), r)
	if err != nil {
		return err
	}
	for {
		msg, err := in.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := out.Send(msg); err != nil {
			return err
		}
	}
}
