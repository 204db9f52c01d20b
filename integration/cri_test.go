package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ociseek/ociseek/integration/harness"
	"github.com/ociseek/ociseek/internal/regtest"
)

// criNamespace is the containerd namespace of the CRI plugin.
const criNamespace = "k8s.io"

// TestKubernetesPathCRI is the Kubernetes path: containerd's CRI plugin
// configured with snapshotter "soci" and disable_snapshot_annotations =
// false, driven by crictl as the kubelet would. crictl pulls the indexed
// image and runs it in a pod; the data layer is served lazily.
func TestKubernetesPathCRI(t *testing.T) {
	ctx := testContext(t)
	crictl := harness.Tool(t, "crictl") // built from tools/crictl when missing
	img := testImage(t, smallData)
	reg := regtest.Start(t, regtest.KindDistribution)
	proxy, ref := lazyImage(t, reg, img, "cri", indexV2, indexFlags)
	// The pod sandbox ("pause") image: the busybox layer, sleeping.
	pause := harness.Image{Layers: img.Layers[:1], Cmd: []string{"/bin/sleep", "3600"}}
	if _, err := harness.PushImage(ctx, proxy.Host, "pause", "v1", pause); err != nil {
		t.Fatal(err)
	}
	env := harness.NewEnv(t, tools, harness.EnvOptions{CRI: true, SandboxImage: proxy.Host + "/pause:v1"})
	cri := func(args ...string) (string, error) {
		full := append([]string{"--runtime-endpoint", "unix://" + env.Containerd.Address,
			"--image-endpoint", "unix://" + env.Containerd.Address, "--timeout", "60s"}, args...)
		return harness.Run(ctx, 2*time.Minute, crictl, full...)
	}
	// Pods outlive containerd (their shims keep running): remove them
	// before containerd stops (cleanups run last first).
	t.Cleanup(func() { _, _ = cri("rmp", "--force", "--all") })

	proxy.Reset()
	if out, err := cri("pull", ref); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("crictl pull: %s", out)
	}
	logs := runPod(t, cri, ref)
	if logs != harness.HelloContent {
		t.Errorf("pod container logged %q, want %q", logs, harness.HelloContent)
	}
	t.Logf("registry served %s for crictl pull and run (image %d bytes)", proxy, imageSize(img))
	if data := int64(len(img.Layers[1].Blob)); proxy.BlobBytes() > data/2 {
		t.Errorf("registry served %s; the data layer is %d bytes: not lazy", proxy, data)
	}
	out, rows, err := env.ExplainIn(ctx, criNamespace, ref)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ociseek explain:\n%s", out)
	if row := rows[img.Layers[1].Digest().String()]; row != [2]string{"lazy", "mounted-unverified"} {
		t.Errorf("data layer pulled through CRI: explain says %v, want lazy mounted-unverified (background completion is off)", row)
	}
	if m, err := env.FUSEMounts(); err != nil || len(m) == 0 {
		t.Errorf("no FUSE mount after a CRI pull (%v, %v)", m, err)
	}
}

// runPod runs image in a host-network pod (no CNI needed) and returns the
// container's log once it has exited.
func runPod(t *testing.T, cri func(...string) (string, error), image string) string {
	t.Helper()
	dir := t.TempDir()
	pod := map[string]any{
		"metadata":      map[string]any{"name": "lazy", "namespace": "default", "uid": "lazy-uid", "attempt": 1},
		"log_directory": dir,
		"linux":         map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
	}
	ctr := map[string]any{
		"metadata": map[string]any{"name": "hello"},
		"image":    map[string]any{"image": image},
		"log_path": "hello.log",
	}
	podFile, ctrFile := writeJSON(t, dir, "pod.json", pod), writeJSON(t, dir, "ctr.json", ctr)
	podID, err := cri("runp", podFile)
	if err != nil {
		t.Fatal(err)
	}
	podID = strings.TrimSpace(podID)
	id, err := cri("create", podID, ctrFile, podFile)
	if err != nil {
		t.Fatal(err)
	}
	id = strings.TrimSpace(id)
	if _, err := cri("start", id); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		state, err := cri("inspect", "--output", "go-template", "--template", "{{.status.state}}", id)
		if err == nil && strings.TrimSpace(state) == "CONTAINER_EXITED" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s did not exit within a minute (state %q, %v)", id, state, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	logs, err := os.ReadFile(filepath.Join(dir, "hello.log"))
	if err != nil {
		t.Fatal(err)
	}
	return criLogText(string(logs))
}

// criLogText returns the message part of CRI log lines
// ("<time> stdout F <text>").
func criLogText(logs string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(logs, "\n"), "\n") {
		f := strings.SplitN(line, " ", 4)
		if len(f) == 4 {
			b.WriteString(f[3] + "\n")
		}
	}
	return b.String()
}

func writeJSON(t *testing.T, dir, name string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
