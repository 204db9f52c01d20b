package integration

import (
	"encoding/base64"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ociseek/ociseek/integration/harness"
	"github.com/ociseek/ociseek/internal/regtest"
)

// TestCRIKeychain is a Kubernetes node pulling a private image: the
// registry demands a user and password, the daemon has no Docker config,
// and kubelet's credentials reach it only through the CRI image service
// it serves in front of containerd's ([cri_keychain]). crictl pulls
// through the daemon's socket with --creds and with --auth (as kubelet
// sends an image pull secret): the data layer is mounted lazily and the
// pod runs. Pulled through containerd's own socket, the daemon never sees
// the credentials: containerd pulls the layer itself and ociseek explain
// says unauthorized.
func TestCRIKeychain(t *testing.T) {
	ctx := testContext(t)
	crictl := harness.Tool(t, "crictl")
	img := testImage(t, smallData)
	const user, password = "kubelet", "pull-secret-pw"
	reg := regtest.StartWithAuth(t, user, password)

	// The image is pushed and indexed through a proxy that logs in for the
	// tools (the harness pushes without credentials).
	admin := startLoginProxy(t, reg.Host, user, password)
	pause := harness.Image{Layers: img.Layers[:1], Cmd: []string{"/bin/sleep", "3600"}}
	if _, err := harness.PushImage(ctx, admin, "pause", "v1", pause); err != nil {
		t.Fatal(err)
	}
	if _, err := harness.PushImage(ctx, admin, "private", "v1", img); err != nil {
		t.Fatal(err)
	}
	convertArgs := append(append([]string{"convert"}, indexFlags...), admin+"/private:v1", admin+"/private:v1-soci")
	if out, err := harness.Run(ctx, 5*time.Minute, tools.Ociseek, convertArgs...); err != nil {
		t.Fatalf("ociseek convert: %v\n%s", err, out)
	}
	// Everything else reaches the registry without credentials of its own,
	// through a proxy that counts the bytes served.
	proxy := harness.StartCountingProxy(t, reg.Host)
	ref, pauseRef := proxy.Host+"/private:v1-soci", proxy.Host+"/pause:v1"
	data := img.Layers[1]
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))

	for _, tc := range []struct {
		name string
		// viaDaemon: crictl's image endpoint is the daemon's socket;
		// otherwise containerd's.
		viaDaemon bool
		creds     []string
		lazy      bool
	}{
		{"--creds", true, []string{"--creds", user + ":" + password}, true},
		{"--auth", true, []string{"--auth", basic}, true},
		{"past the daemon", false, []string{"--creds", user + ":" + password}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := harness.NewEnv(t, tools, harness.EnvOptions{
				CRI: true, SandboxImage: pauseRef, CRIKeychain: true,
				// No Docker config: a file that does not exist.
				Daemon: harness.DaemonOptions{Extra: "[registry]\ndocker_config = \"/nonexistent/ociseek-test/config.json\"\n"},
			})
			imageEndpoint := env.Containerd.Address
			if tc.viaDaemon {
				imageEndpoint = env.ImageService
			}
			cri := func(args ...string) (string, error) {
				full := append([]string{"--runtime-endpoint", "unix://" + env.Containerd.Address,
					"--image-endpoint", "unix://" + imageEndpoint, "--timeout", "60s"}, args...)
				return harness.Run(ctx, 2*time.Minute, crictl, full...)
			}
			t.Cleanup(func() { _, _ = cri("rmp", "--force", "--all") })

			if out, err := cri(append(append([]string{"pull"}, tc.creds...), pauseRef)...); err != nil {
				t.Fatalf("crictl pull pause: %v\n%s", err, out)
			}
			proxy.Reset()
			if out, err := cri(append(append([]string{"pull"}, tc.creds...), ref)...); err != nil {
				t.Fatalf("crictl pull %s: %v\n%s", strings.Join(tc.creds[:1], " "), err, out)
			}
			out, rows, err := env.ExplainIn(ctx, criNamespace, ref)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("ociseek explain:\n%s", out)
			row := rows[data.Digest().String()]
			mounts, err := env.FUSEMounts()
			if err != nil {
				t.Fatal(err)
			}
			if !tc.lazy {
				if row != [2]string{"overlay", "unauthorized"} {
					t.Errorf("data layer: explain says %v, want overlay unauthorized", row)
				}
				if len(mounts) != 0 {
					t.Errorf("FUSE mounts %v: the daemon had no credentials, nothing should be lazy", mounts)
				}
				if !strings.Contains(out, "refused the daemon") {
					t.Errorf("explain does not say why in words:\n%s", out)
				}
				return
			}
			if row != [2]string{"lazy", "mounted-unverified"} {
				t.Errorf("data layer: explain says %v, want lazy mounted-unverified", row)
			}
			if len(mounts) == 0 {
				t.Error("no FUSE mount after the pull")
			}
			if logs := runPod(t, cri, ref); logs != harness.HelloContent {
				t.Errorf("pod container logged %q, want %q", logs, harness.HelloContent)
			}
			t.Logf("registry served %s for the pull and the pod (data layer %d bytes)", proxy, len(data.Blob))
			if proxy.BlobBytes() > int64(len(data.Blob))/2 {
				t.Errorf("registry served %s; the data layer is %d bytes: not lazy", proxy, len(data.Blob))
			}
			if strings.Contains(env.Daemon.Tail(1<<20), password) || strings.Contains(env.Daemon.Tail(1<<20), basic) {
				t.Error("the daemon's log holds the password")
			}
		})
	}
}

// startLoginProxy serves, on 127.0.0.1, the registry at target with user
// and password added to every request, and returns its host:port.
func startLoginProxy(t *testing.T, target, user, password string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := l.Addr().String()
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	direct := rp.Director
	rp.Director = func(r *http.Request) {
		direct(r)
		r.SetBasicAuth(user, password)
	}
	// Upload locations name the registry itself: keep clients on the proxy.
	rp.ModifyResponse = func(resp *http.Response) error {
		if loc := resp.Header.Get("Location"); loc != "" {
			resp.Header.Set("Location", strings.Replace(loc, "//"+target, "//"+host, 1))
		}
		return nil
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return host
}
