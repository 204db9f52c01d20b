package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/containerd/log"
	"github.com/ociseek/ociseek/config"
	"github.com/ociseek/ociseek/internal/crikeychain"
	"google.golang.org/grpc"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// criService is the CRI ImageService proxy of [cri_keychain]: kubelet
// pulls through it, containerd does the pulls, and the credentials of
// each pull reach the daemon's registry client through the keychain. A
// nil *criService (the section off) does nothing.
type criService struct {
	proxy      *crikeychain.Proxy
	upstream   io.Closer // the connection to containerd's CRI
	listenPath string    // "" when served on the daemon's own socket
	srv        *grpc.Server
}

// newCRIService builds the proxy when [cri_keychain] is on and makes
// client consult its keychain before the Docker config. It must run
// before anything copies client (withoutRetries does), so that every
// registry request of the daemon sees the keychain.
func newCRIService(cfg *config.Config, client *auth.Client) (*criService, error) {
	c := cfg.CRIKeychain
	if !c.Enable {
		return nil, nil
	}
	upstream, conn, err := crikeychain.Dial(c.ImageServicePath)
	if err != nil {
		return nil, fmt.Errorf("cri_keychain: %w", err)
	}
	keys := crikeychain.New(c.TTL.Duration, nil)
	client.Credential = keys.Credential(client.Credential)
	// Tokens derived from a pull's credentials (a basic-auth one is the
	// password itself) outlive them by at most a quarter of the TTL.
	client.Cache = crikeychain.NewRotatingCache(c.TTL.Duration/4, nil)
	return &criService{proxy: crikeychain.NewProxy(upstream, keys), upstream: conn, listenPath: c.ListenPath}, nil
}

// serve registers the ImageService on the daemon's server srv, or, with
// a listen_path, serves it on a socket of its own whose server failure
// goes to errc.
func (c *criService) serve(ctx context.Context, srv *grpc.Server, errc chan<- error) error {
	if c == nil {
		return nil
	}
	if c.listenPath == "" {
		runtime.RegisterImageServiceServer(srv, c.proxy)
		log.G(ctx).Info("serving the CRI image service on the daemon's socket")
		return nil
	}
	lis, err := listenUnix(c.listenPath)
	if err != nil {
		return fmt.Errorf("cri_keychain.listen_path: %w", err)
	}
	c.srv = grpc.NewServer()
	runtime.RegisterImageServiceServer(c.srv, c.proxy)
	go func() {
		if err := c.srv.Serve(lis); err != nil {
			errc <- fmt.Errorf("CRI image service: %w", err)
		}
	}()
	log.G(ctx).WithField("address", c.listenPath).Info("serving the CRI image service")
	return nil
}

// close stops the separate server, if any, and drops the connection to
// containerd. The credentials go with the process: they were never
// anywhere but in its memory.
func (c *criService) close() error {
	if c == nil {
		return nil
	}
	if c.srv != nil {
		stopGRPC(c.srv)
		if err := os.Remove(c.listenPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.L.WithError(err).Warn("remove the CRI image service socket")
		}
	}
	return c.upstream.Close()
}
