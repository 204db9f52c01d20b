package main

import (
	"context"
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log/logtest"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/ociseek/ociseek/config"
	"github.com/ociseek/ociseek/fs"
	"github.com/ociseek/ociseek/internal/crikeychain"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/snapshot"
)

// pullingCRI stands in for containerd's CRI: a PullImage prepares the
// image's layer on the daemon's snapshotter, as containerd's unpack does
// during a pull, and records the decision it got.
type pullingCRI struct {
	runtime.UnimplementedImageServiceServer
	prepare func() error

	mu   sync.Mutex
	errs []error
}

func (p *pullingCRI) PullImage(_ context.Context, r *runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
	err := p.prepare()
	p.mu.Lock()
	p.errs = append(p.errs, err)
	p.mu.Unlock()
	return &runtime.PullImageResponse{ImageRef: r.GetImage().GetImage()}, nil
}

// serve serves p as containerd's CRI image service on the unix socket
// path until the test ends.
func (p *pullingCRI) serve(t *testing.T, path string) {
	t.Helper()
	srv := grpc.NewServer()
	runtime.RegisterImageServiceServer(srv, p)
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
}

// indexedLayerLabels pushes the test layer to reg as an indexed image and
// returns the labels containerd's unpack of that layer carries.
func indexedLayerLabels(ctx context.Context, t *testing.T, reg *regtest.Registry) map[string]string {
	t.Helper()
	blob, _ := testLayer(t)
	img := pushIndexedImage(ctx, t, reg, blob)
	return map[string]string{
		snapshots.LabelSnapshotRef: "layer",
		fs.LabelImageRef:           reg.Ref("app", "latest"),
		fs.LabelManifestDigest:     img.Digest.String(),
		fs.LabelLayerDigest:        digest.FromBytes(blob).String(),
	}
}

// TestCRIKeychainDaemon: with [cri_keychain] on and no Docker config, the
// daemon serves the CRI image service on listen_path; a pull through it
// with credentials (as crictl --creds and --auth send them) makes the layer
// lazy, read from a registry that demands them; a pull without leaves the
// layer to containerd with reason "unauthorized".
func TestCRIKeychainDaemon(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: FUSE and overlay mounts")
	}
	ctx := logtest.WithT(context.Background(), t)
	reg := regtest.StartWithAuth(t, "alice", "s3cret")
	labels := indexedLayerLabels(ctx, t, reg)
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // no credentials but the CRI's

	for _, tc := range []struct {
		name       string
		auth       *runtime.AuthConfig
		wantReason snapshot.Reason
	}{
		{"--creds", &runtime.AuthConfig{Username: "alice", Password: "s3cret"}, snapshot.ReasonMounted},
		{"--auth", &runtime.AuthConfig{Auth: base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))}, snapshot.ReasonMounted},
		{"no credentials", nil, snapshot.ReasonUnauthorized},
		{"wrong password", &runtime.AuthConfig{Username: "alice", Password: "wrong"}, snapshot.ReasonUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := config.Default()
			cfg.Daemon.Root = filepath.Join(dir, "root")
			cfg.BackgroundFetch.Enable = false
			cfg.CRIKeychain = config.CRIKeychain{
				Enable:           true,
				ImageServicePath: filepath.Join(dir, "containerd.sock"),
				ListenPath:       filepath.Join(dir, "cri.sock"),
				TTL:              config.Dur(time.Hour),
			}
			svc, err := newService(ctx, cfg, prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { svc.shutdown(ctx, true) })

			containerd := &pullingCRI{prepare: func() error {
				_, err := svc.sn.Prepare(ctx, "extract-1 layer", "", snapshots.WithLabels(labels))
				return err
			}}
			containerd.serve(t, cfg.CRIKeychain.ImageServicePath)

			errc := make(chan error, 1)
			if err := svc.cri.serve(ctx, nil, errc); err != nil {
				t.Fatal(err)
			}
			client, conn, err := crikeychain.Dial(cfg.CRIKeychain.ListenPath)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			pctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			if _, err := client.PullImage(pctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: reg.Ref("app", "latest")}, Auth: tc.auth}); err != nil {
				t.Fatalf("pull through the daemon's image service: %v", err)
			}
			containerd.mu.Lock()
			prepErr := containerd.errs[0]
			containerd.mu.Unlock()
			info, err := svc.sn.Stat(ctx, "extract-1 layer")
			if tc.wantReason == snapshot.ReasonMounted {
				if !errdefs.IsAlreadyExists(prepErr) {
					t.Fatalf("Prepare during the pull = %v, want AlreadyExists (layer served lazily)", prepErr)
				}
				mounts, err := svc.sn.View(ctx, "view", "layer")
				if err != nil {
					t.Fatal(err)
				}
				checkFile(t, mounts, "etc/hello", "hello from the registry")
				return
			}
			if prepErr != nil || err != nil || info.Labels[snapshot.LabelDecisionReason] != string(tc.wantReason) {
				t.Errorf("Prepare = %v; decision %v (%v); want overlay mounts with reason %s", prepErr, info.Labels, err, tc.wantReason)
			}
		})
	}
}

// TestCRIImageServiceOnDaemonSocket: with listen_path empty (the default),
// kubelet's imageServiceEndpoint is the daemon's own socket: a pull there
// reaches containerd's CRI, and the daemon's registry client then answers
// the image's repository with the pull's credentials. With [cri_keychain]
// off, the socket serves no image service and the client is unchanged.
func TestCRIImageServiceOnDaemonSocket(t *testing.T) {
	ctx := logtest.WithT(context.Background(), t)
	for _, enable := range []bool{true, false} {
		dir := t.TempDir()
		cfg := config.Default()
		cfg.Daemon.Address = filepath.Join(dir, "ociseek.sock")
		cfg.CRIKeychain.Enable = enable
		cfg.CRIKeychain.ImageServicePath = filepath.Join(dir, "containerd.sock")

		pulled := make(chan string, 1)
		containerd := &pullingCRI{prepare: func() error { pulled <- "pulled"; return nil }}
		containerd.serve(t, cfg.CRIKeychain.ImageServicePath)

		dockerConfig := func(context.Context, string) (auth.Credential, error) {
			return auth.Credential{Username: "from-docker-config"}, nil
		}
		client := &auth.Client{Credential: dockerConfig}
		cri, err := newCRIService(cfg, client)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cri.close() })
		srv := grpc.NewServer()
		if err := cri.serve(ctx, srv, make(chan error, 1)); err != nil {
			t.Fatal(err)
		}
		lis, err := listenUnix(cfg.Daemon.Address)
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(srv.Stop)

		kubelet, conn, err := crikeychain.Dial(cfg.Daemon.Address)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err = kubelet.PullImage(pctx, &runtime.PullImageRequest{
			Image: &runtime.ImageSpec{Image: "registry.example/team/app:v1"},
			Auth:  &runtime.AuthConfig{Username: "kubelet", Password: "pw"},
		})
		scoped := auth.AppendScopesForHost(ctx, "registry.example", auth.ScopeRepository("team/app", auth.ActionPull))
		cred, cerr := client.Credential(scoped, "registry.example")
		switch {
		case enable && (err != nil || len(pulled) != 1):
			t.Errorf("on: pull through the daemon's socket = %v, containerd pulls %d; want forwarded", err, len(pulled))
		case enable && (cerr != nil || cred.Username != "kubelet"):
			t.Errorf("on: registry client credential %+v, %v; want the pull's", cred, cerr)
		case !enable && status.Code(err) != codes.Unimplemented:
			t.Errorf("off: pull through the daemon's socket = %v; want Unimplemented", err)
		case !enable && cred.Username != "from-docker-config":
			t.Errorf("off: registry client credential %+v; want the Docker config's", cred)
		}
	}
}
