package crikeychain

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// fakeCRI is containerd's CRI ImageService as the proxy sees it: it
// records each PullImage and fails the pulls of images named "fail".
type fakeCRI struct {
	runtime.UnimplementedImageServiceServer

	mu    sync.Mutex
	pulls []*runtime.PullImageRequest
	// credsAtPull is what the keychain held for the image's repository
	// while containerd pulled (when the snapshotter prepares its layers).
	credsAtPull []auth.Credential
	keys        *Keychain
}

func (f *fakeCRI) PullImage(_ context.Context, r *runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pulls = append(f.pulls, r)
	if key, err := keyOf(r.GetImage().GetImage()); err == nil && f.keys != nil {
		cred, _ := f.keys.Lookup(key.host, key.repository)
		f.credsAtPull = append(f.credsAtPull, cred)
	}
	if strings.Contains(r.GetImage().GetImage(), "fail") {
		return nil, status.Error(codes.Unauthenticated, "pull refused by the registry")
	}
	return &runtime.PullImageResponse{ImageRef: "sha256:0123"}, nil
}

func (f *fakeCRI) ListImages(context.Context, *runtime.ListImagesRequest) (*runtime.ListImagesResponse, error) {
	return &runtime.ListImagesResponse{Images: []*runtime.Image{{Id: "sha256:list"}}}, nil
}

func (f *fakeCRI) ImageStatus(_ context.Context, r *runtime.ImageStatusRequest) (*runtime.ImageStatusResponse, error) {
	return &runtime.ImageStatusResponse{Image: &runtime.Image{Id: "status:" + r.GetImage().GetImage()}}, nil
}

func (f *fakeCRI) RemoveImage(context.Context, *runtime.RemoveImageRequest) (*runtime.RemoveImageResponse, error) {
	return &runtime.RemoveImageResponse{}, nil
}

func (f *fakeCRI) ImageFsInfo(context.Context, *runtime.ImageFsInfoRequest) (*runtime.ImageFsInfoResponse, error) {
	return &runtime.ImageFsInfoResponse{ImageFilesystems: []*runtime.FilesystemUsage{{Timestamp: 42}}}, nil
}

func (f *fakeCRI) StreamImages(_ *runtime.StreamImagesRequest, s grpc.ServerStreamingServer[runtime.StreamImagesResponse]) error {
	for _, id := range []string{"a", "b", "c"} {
		if err := s.Send(&runtime.StreamImagesResponse{Images: []*runtime.Image{{Id: id}}}); err != nil {
			return err
		}
	}
	return nil
}

// fixture is a fake containerd CRI on one unix socket and the proxy on
// another, both in t.TempDir(), with a client of the proxy.
type fixture struct {
	upstream *fakeCRI
	keys     *Keychain
	client   runtime.ImageServiceClient
	logs     *syncBuffer
	clock    *fakeClock
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// syncBuffer is a bytes.Buffer the proxy's handlers may log into
// concurrently.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func serveUnix(t *testing.T, path string, srv *grpc.Server) {
	t.Helper()
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
}

func newFixture(t *testing.T, ttl time.Duration) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{clock: &fakeClock{now: time.Unix(1_700_000_000, 0)}, logs: &syncBuffer{}}
	f.keys = New(ttl, f.clock.Now)
	f.upstream = &fakeCRI{keys: f.keys}

	up := grpc.NewServer()
	runtime.RegisterImageServiceServer(up, f.upstream)
	serveUnix(t, filepath.Join(dir, "containerd.sock"), up)

	upstream, conn, err := Dial(filepath.Join(dir, "containerd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	// Every log line of the proxy's handlers goes to f.logs, at the most
	// verbose level, as the daemon's own logger would carry them.
	logger := logrus.New()
	logger.SetOutput(f.logs)
	logger.SetLevel(logrus.TraceLevel)
	withLog := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		return h(log.WithLogger(ctx, logrus.NewEntry(logger)), req)
	}
	proxy := grpc.NewServer(grpc.UnaryInterceptor(withLog))
	runtime.RegisterImageServiceServer(proxy, NewProxy(upstream, f.keys))
	serveUnix(t, filepath.Join(dir, "ociseek.sock"), proxy)

	client, cconn, err := Dial(filepath.Join(dir, "ociseek.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cconn.Close() })
	f.client = client
	return f
}

func (f *fixture) pull(t *testing.T, image string, a *runtime.AuthConfig) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := f.client.PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: image}, Auth: a})
	return err
}

// credentialFor asks the keychain's credential function what the
// daemon's registry client would get for a pull of repository on host.
func credentialFor(t *testing.T, k *Keychain, host, repository string) (auth.Credential, bool) {
	t.Helper()
	fellBack := false
	fallback := func(context.Context, string) (auth.Credential, error) {
		fellBack = true
		return auth.Credential{Username: "docker-config"}, nil
	}
	ctx := auth.AppendScopesForHost(context.Background(), host, auth.ScopeRepository(repository, auth.ActionPull))
	cred, err := k.Credential(fallback)(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	return cred, !fellBack
}

func TestPullImageCredentialsForwardedAndKept(t *testing.T) {
	f := newFixture(t, time.Hour)
	for _, tc := range []struct {
		name  string
		image string
		auth  *runtime.AuthConfig
		host  string
		repo  string
		want  auth.Credential
	}{
		{"username and password", "127.0.0.1:5000/team/app:v1",
			&runtime.AuthConfig{Username: "alice", Password: "s3cret-pw"},
			"127.0.0.1:5000", "team/app", auth.Credential{Username: "alice", Password: "s3cret-pw"}},
		{"auth field, as crictl --auth sends it", "registry.example:443/app@sha256:" + strings.Repeat("a", 64),
			&runtime.AuthConfig{Auth: "Ym9iOnBhc3M6d2l0aDpjb2xvbnM="}, // bob:pass:with:colons
			"registry.example:443", "app", auth.Credential{Username: "bob", Password: "pass:with:colons"}},
		{"identity token", "busybox",
			&runtime.AuthConfig{Username: "<token>", IdentityToken: "refresh-tok"},
			"registry-1.docker.io", "library/busybox", auth.Credential{Username: "<token>", RefreshToken: "refresh-tok"}},
		{"registry token", "quay.example/org/tool:latest",
			&runtime.AuthConfig{RegistryToken: "access-tok"},
			"quay.example", "org/tool", auth.Credential{AccessToken: "access-tok"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := f.pull(t, tc.image, tc.auth); err != nil {
				t.Fatalf("pull through the proxy: %v", err)
			}
			f.upstream.mu.Lock()
			got := f.upstream.pulls[len(f.upstream.pulls)-1]
			atPull := f.upstream.credsAtPull[len(f.upstream.credsAtPull)-1]
			f.upstream.mu.Unlock()
			if got.GetImage().GetImage() != tc.image || !proto.Equal(got.GetAuth(), tc.auth) {
				t.Errorf("containerd got image %q auth %v; want the request unchanged", got.GetImage().GetImage(), got.GetAuth())
			}
			if atPull != tc.want {
				t.Errorf("while containerd pulled, the keychain held %+v; want %+v", atPull, tc.want)
			}
			cred, ok := credentialFor(t, f.keys, tc.host, tc.repo)
			if !ok || cred != tc.want {
				t.Errorf("credential for %s/%s = %+v (from keychain %v); want %+v", tc.host, tc.repo, cred, ok, tc.want)
			}
		})
	}
	// Another repository of the same registry is not given alice's.
	if cred, ok := credentialFor(t, f.keys, "127.0.0.1:5000", "team/other"); ok {
		t.Errorf("team/other got %+v from the keychain; credentials must stay with their repository", cred)
	}
	// A pull without credentials keeps what an earlier pull brought.
	if err := f.pull(t, "127.0.0.1:5000/team/app:v2", nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := credentialFor(t, f.keys, "127.0.0.1:5000", "team/app"); !ok {
		t.Error("a pull without credentials dropped the repository's")
	}
}

func TestCredentialsExpireAfterTTL(t *testing.T) {
	f := newFixture(t, 10*time.Minute)
	if err := f.pull(t, "127.0.0.1:5000/app:v1", &runtime.AuthConfig{Username: "alice", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(10*time.Minute - time.Second)
	if _, ok := credentialFor(t, f.keys, "127.0.0.1:5000", "app"); !ok {
		t.Fatal("credentials gone before their TTL")
	}
	f.clock.Advance(time.Second)
	if cred, ok := credentialFor(t, f.keys, "127.0.0.1:5000", "app"); ok || cred.Username != "docker-config" {
		t.Errorf("after the TTL the credential is %+v (from keychain %v); want the Docker config's", cred, ok)
	}
	if n := f.keys.Len(); n != 0 {
		t.Errorf("%d entries still in memory after the TTL", n)
	}
	// A new pull brings them back, for a full TTL again.
	if err := f.pull(t, "127.0.0.1:5000/app:v1", &runtime.AuthConfig{Username: "alice", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := credentialFor(t, f.keys, "127.0.0.1:5000", "app"); !ok {
		t.Error("a new pull did not renew the credentials")
	}
}

func TestFailedPullForgetsItsCredentials(t *testing.T) {
	f := newFixture(t, time.Hour)
	err := f.pull(t, "127.0.0.1:5000/fail:v1", &runtime.AuthConfig{Username: "alice", Password: "wrong"})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "pull refused by the registry") {
		t.Fatalf("pull error %v; want containerd's Unauthenticated error passed through", err)
	}
	if _, ok := credentialFor(t, f.keys, "127.0.0.1:5000", "fail"); ok {
		t.Error("credentials of a failed pull were kept")
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	f := newFixture(t, time.Hour)
	secrets := []string{"pw-Secret-1", "tok-Secret-2", "tok-Secret-3", "pw-Secret-4", "garbled-Secret-5"}
	auths := []*runtime.AuthConfig{
		{Username: "alice", Password: secrets[0]},
		{IdentityToken: secrets[1], RegistryToken: secrets[2]},
		{Auth: "YWxpY2U6cHctU2VjcmV0LTQ="}, // alice:pw-Secret-4
		{Auth: "Z2FyYmxlZC1TZWNyZXQtNQ=="}, // garbled-Secret-5: no colon
		{Auth: "not base64 garbled-Secret-5"},
	}
	var errs []string
	for i, a := range auths {
		image := "127.0.0.1:5000/app:v1"
		if i%2 == 1 {
			image = "127.0.0.1:5000/fail:v1"
		}
		if err := f.pull(t, image, a); err != nil {
			errs = append(errs, err.Error())
		}
	}
	logs := f.logs.String()
	if !strings.Contains(logs, "identity token, registry token") || !strings.Contains(logs, "credentials not kept") {
		t.Fatalf("the proxy logged nothing about the credentials (the check below would prove nothing):\n%s", logs)
	}
	for _, s := range secrets {
		for _, text := range append([]string{logs}, errs...) {
			if strings.Contains(text, s) {
				t.Errorf("secret %q appears in %q", s, text)
			}
		}
	}
	// The base64 form of a secret is a secret too.
	if strings.Contains(logs, "YWxpY2U6cHctU2VjcmV0LTQ=") {
		t.Error("an auth field appears in the logs")
	}
}

func TestEveryImageServiceCallForwarded(t *testing.T) {
	f := newFixture(t, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := f.client.ListImages(ctx, &runtime.ListImagesRequest{})
	if err != nil || len(list.GetImages()) != 1 || list.GetImages()[0].GetId() != "sha256:list" {
		t.Errorf("ListImages = %v, %v", list, err)
	}
	st, err := f.client.ImageStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: "x"}})
	if err != nil || st.GetImage().GetId() != "status:x" {
		t.Errorf("ImageStatus = %v, %v", st, err)
	}
	if _, err := f.client.RemoveImage(ctx, &runtime.RemoveImageRequest{Image: &runtime.ImageSpec{Image: "x"}}); err != nil {
		t.Errorf("RemoveImage: %v", err)
	}
	fsInfo, err := f.client.ImageFsInfo(ctx, &runtime.ImageFsInfoRequest{})
	if err != nil || len(fsInfo.GetImageFilesystems()) != 1 || fsInfo.GetImageFilesystems()[0].GetTimestamp() != 42 {
		t.Errorf("ImageFsInfo = %v, %v", fsInfo, err)
	}
	stream, err := f.client.StreamImages(ctx, &runtime.StreamImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for {
		msg, err := stream.Recv()
		if err != nil {
			break
		}
		ids = append(ids, msg.GetImages()[0].GetId())
	}
	if strings.Join(ids, ",") != "a,b,c" {
		t.Errorf("StreamImages gave %v; want a,b,c", ids)
	}
}
