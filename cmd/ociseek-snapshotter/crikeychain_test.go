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
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

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
	blob, _ := testLayer(t)
	img := pushIndexedImage(ctx, t, reg, blob)
	labels := map[string]string{
		snapshots.LabelSnapshotRef: "layer",
		fs.LabelImageRef:           reg.Ref("app", "latest"),
		fs.LabelManifestDigest:     img.Digest.String(),
		fs.LabelLayerDigest:        digest.FromBytes(blob).String(),
	}
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
			upstream := grpc.NewServer()
			runtime.RegisterImageServiceServer(upstream, containerd)
			lis, err := net.Listen("unix", cfg.CRIKeychain.ImageServicePath)
			if err != nil {
				t.Fatal(err)
			}
			go func() { _ = upstream.Serve(lis) }()
			t.Cleanup(upstream.Stop)

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
