package discover

import (
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/index"
)

// v1Repos returns the repositories of t that v1 indices may be taken from:
// all of them when Options.V1Repos is empty, else those it names.
func (d *Discoverer) v1Repos(t target) []string {
	all := t.searchRepos()
	if len(d.opts.V1Repos) == 0 {
		return all
	}
	var out []string
	for _, name := range all {
		if trustedV1Repo(d.opts.V1Repos, name) {
			out = append(out, name)
		}
	}
	return out
}

// trustedV1Repo reports whether repository name ("host/path") is covered by
// one of the entries of trusted: an entry names a whole registry ("host")
// or a repository and those under it ("host/path"); a trailing "/" or
// "/..." is ignored. Matching is by whole path segments, so
// "registry.example/team" does not cover "registry.example/team-b".
func trustedV1Repo(trusted []string, name string) bool {
	for _, p := range trusted {
		p = strings.TrimSuffix(strings.TrimSuffix(p, "..."), "/")
		if p != "" && (name == p || strings.HasPrefix(name, p+"/")) {
			return true
		}
	}
	return false
}

// notTrusted is Find's answer for an image that has no usable v2 index and
// whose repositories are not trusted for v1 indices: no registry is asked
// for its v1 indices at all.
func notTrusted(t target, manifest digest.Digest, v2Err error) error {
	err := fmt.Errorf("image manifest %s in %s: v1 indices are used only from the configured repositories: %w: %w",
		manifest, t.image, index.ErrIndexNotTrusted, index.ErrNoIndex)
	if v2Err != nil {
		return fmt.Errorf("%w (and the v2 binding: %w)", err, v2Err)
	}
	return err
}
