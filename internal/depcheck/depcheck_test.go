// Package depcheck holds a test that keeps the import graph pointing the way
// the README's architecture section draws it: cmd → snapshot → fs → ztoc,
// with index beside fs and config read by cmd alone. A new edge needs a
// visible change to the table below.
package depcheck

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/ociseek/ociseek/"

// allowed maps a package (or a prefix ending in "/...") to the internal
// packages it may import. Packages not listed may import nothing internal.
var allowed = map[string][]string{
	// The daemon wires everything; the CLI sees fs only through lazyfs,
	// the one construction of the lazy file system both binaries share.
	"cmd/ociseek-snapshotter": {"..."},
	"cmd/ociseek":             {"cmd/internal/lazyfs", "fs", "index", "index/discover", "index/build", "internal/hosts", "internal/label", "snapshot", "ztoc"},
	"cmd/internal/lazyfs":     {"fs", "fs/...", "index", "index/discover", "ztoc"},
	"integration/...":         {"integration/...", "ztoc/ztoctest", "internal/...", "index", "snapshot", "ztoc"},
	"internal/...":            {"..."},
	"snapshot":                {"index", "internal/label"},
	"snapshot/unpack":         {},
	"fs":                      {"fs/layer", "fs/span", "fs/remote", "fs/cache", "fs/bgfetch", "ztoc", "internal/label"},
	"fs/layer":                {"ztoc"},
	"fs/span":                 {"ztoc", "ztoc/gzipx"},
	"fs/remote":               {"internal/redact"},
	"fs/cache":                {},
	"fs/bgfetch":              {},
	"index":                   {},
	"index/discover":          {"index", "ztoc", "ztoc/fbs", "ztoc/gzipx", "internal/redact"},
	"index/build":             {"index", "ztoc", "ztoc/fbs", "ztoc/gzipx"},
	"ztoc":                    {"ztoc/fbs", "ztoc/gzipx"},
	"ztoc/fbs":                {},
	"ztoc/gzipx":              {},
	"ztoc/ztoctest":           {"ztoc", "ztoc/fbs", "ztoc/gzipx"},
	"config":                  {},
}

func rule(pkg string) ([]string, bool) {
	if r, ok := allowed[pkg]; ok {
		return r, true
	}
	for k, r := range allowed {
		if p, ok := strings.CutSuffix(k, "/..."); ok && (pkg == p || strings.HasPrefix(pkg, p+"/")) {
			return r, true
		}
	}
	return nil, false
}

func permitted(rules []string, dep string) bool {
	for _, r := range rules {
		if r == "..." || r == dep {
			return true
		}
		if p, ok := strings.CutSuffix(r, "/..."); ok && (dep == p || strings.HasPrefix(dep, p+"/")) {
			return true
		}
	}
	return false
}

type listedPackage struct {
	ImportPath string
	Imports    []string
}

// TestImportDirection fails when a production (non-test) import crosses the
// layering. Test-only imports are exempt: they never reach a binary.
func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-e", "-json", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p listedPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkg := strings.TrimPrefix(p.ImportPath, module)
		if strings.HasPrefix(pkg, "internal/depcheck") {
			continue
		}
		rules, known := rule(pkg)
		for _, imp := range p.Imports {
			dep, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			if !known {
				t.Errorf("package %s is not in the layering table but imports %s", pkg, dep)
				continue
			}
			if !permitted(rules, dep) {
				t.Errorf("package %s must not import %s (see the architecture section of README.md)", pkg, dep)
			}
		}
	}
}

// TestCLIReachesFSThroughLazyfs pins the CLI's row: "ociseek mount" builds
// its file system with cmd/internal/lazyfs, as the daemon does, so the CLI
// has no reason to reach into fs's subpackages.
func TestCLIReachesFSThroughLazyfs(t *testing.T) {
	rules, ok := rule("cmd/ociseek")
	if !ok {
		t.Fatal("cmd/ociseek has no row in the layering table")
	}
	for _, dep := range []string{"fs/span", "fs/bgfetch", "fs/layer", "fs/remote", "fs/cache", "snapshot/unpack"} {
		if permitted(rules, dep) {
			t.Errorf("cmd/ociseek may import %s; it should go through cmd/internal/lazyfs", dep)
		}
	}
	for _, dep := range []string{"cmd/internal/lazyfs", "fs"} {
		if !permitted(rules, dep) {
			t.Errorf("cmd/ociseek may not import %s", dep)
		}
	}
}
