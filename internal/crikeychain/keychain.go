// Package crikeychain gives the daemon the registry credentials kubelet
// hands to the container runtime. On a Kubernetes node, image pull secrets
// and credential provider plugins reach containerd only inside CRI
// PullImage calls, never in a file; a snapshotter that reads layers
// lazily, after the pull, needs them too. Proxy serves the CRI
// ImageService in front of containerd's (kubelet's imageServiceEndpoint
// points at it), forwards every call unchanged, and keeps the credentials
// of each PullImage in a Keychain, in memory only, for the image's
// registry and repository, for a bounded time. Keychain.Credential hands
// them to the daemon's registry client (oras auth) before its usual
// source, the Docker config.
//
// Why not stargz-snapshotter's service/keychain/cri (v0.19.1), which does
// the same job: it keeps credentials with no expiry (until a RemoveImage
// of the very same reference), keyed by the full image reference rather
// than registry and repository; it drops registry tokens and passes an
// identity token as a password; its auth decoding quotes the decoded
// "user:password" in an error message; it does not forward StreamImages;
// it gives up on containerd after 100 tries and answers every call with
// an error until connected; its credential type is its own resolver's
// (host, reference.Spec) func, and importing it brings 48 more packages
// into the daemon (go-retryablehttp, containerd's remotes/docker and
// OpenTelemetry among them) besides k8s.io/cri-api, which is all this
// package needs.
//
// Secrets are never logged, never written to disk and never put in an
// error message; logs name the image and the kinds of credential only.
package crikeychain

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/distribution/reference"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// DefaultTTL is how long credentials are kept after the PullImage that
// brought them, when the caller does not say: longer than background
// fetching takes to complete the layers of an image, and no longer than
// the short-lived tokens that cloud credential providers hand kubelet
// (ECR's last 12 hours) stay valid.
const DefaultTTL = 12 * time.Hour

// repoKey names one repository as the registry client sees it: host is
// oras's Host() (docker.io becomes registry-1.docker.io), repository the
// path without tag or digest.
type repoKey struct {
	host       string
	repository string
}

// entry is one repository's credentials and when they stop counting.
type entry struct {
	cred    auth.Credential
	expires time.Time
	seq     uint64 // which Store put it there, so a failed pull removes only its own
}

// Keychain holds the credentials of recent PullImage calls, per
// repository, each for ttl after its PullImage. It is safe for concurrent
// use.
type Keychain struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	entries map[repoKey]entry
	seq     uint64
}

// New returns an empty Keychain whose entries last ttl (DefaultTTL when
// ttl is not positive). now is the clock; nil means time.Now.
func New(ttl time.Duration, now func() time.Time) *Keychain {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if now == nil {
		now = time.Now
	}
	return &Keychain{ttl: ttl, now: now, entries: map[repoKey]entry{}}
}

// Store keeps the credentials a PullImage of image carried, replacing
// what the repository had. An empty or absent auth stores nothing (and
// keeps what an earlier pull brought). It returns a token for Forget, and
// the kinds of credential found (for logs: never the values).
func (k *Keychain) Store(image string, a *runtime.AuthConfig) (token uint64, kinds []string, err error) {
	key, err := keyOf(image)
	if err != nil {
		return 0, nil, err
	}
	cred, kinds, err := credentialOf(a)
	if err != nil || cred == auth.EmptyCredential {
		return 0, kinds, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	k.dropExpired(now)
	k.seq++
	k.entries[key] = entry{cred: cred, expires: now.Add(k.ttl), seq: k.seq}
	return k.seq, kinds, nil
}

// Forget removes the credentials Store put for image under token, unless
// a later Store replaced them: a pull that failed may have failed on
// them, and a concurrent successful pull's must stay.
func (k *Keychain) Forget(image string, token uint64) {
	key, err := keyOf(image)
	if err != nil || token == 0 {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if e, ok := k.entries[key]; ok && e.seq == token {
		delete(k.entries, key)
	}
}

// Lookup returns the credentials kept for repository on host (as oras
// names the host), if they have not expired.
func (k *Keychain) Lookup(host, repository string) (auth.Credential, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	k.dropExpired(now)
	e, ok := k.entries[repoKey{host, repository}]
	if !ok {
		return auth.EmptyCredential, false
	}
	return e.cred, true
}

// Len returns how many repositories have credentials that have not
// expired.
func (k *Keychain) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.dropExpired(k.now())
	return len(k.entries)
}

// dropExpired removes entries past their expiry, so that an expired
// secret does not stay in memory until its repository is asked for again.
// k.mu is held.
func (k *Keychain) dropExpired(now time.Time) {
	for key, e := range k.entries {
		if !now.Before(e.expires) {
			delete(k.entries, key)
		}
	}
}

// Credential returns an oras credential function that answers with the
// credentials kept for the repository the request is for, and asks
// fallback otherwise. The repository comes from the scopes oras puts in
// the request's context (discovery and range reads both add
// "repository:<name>:pull"); a request without one, or for a repository
// no PullImage brought credentials for, goes to fallback: credentials
// given for one repository are not handed out for another.
func (k *Keychain) Credential(fallback auth.CredentialFunc) auth.CredentialFunc {
	return func(ctx context.Context, host string) (auth.Credential, error) {
		for _, repo := range scopeRepositories(auth.GetAllScopesForHost(ctx, host)) {
			if cred, ok := k.Lookup(host, repo); ok {
				return cred, nil
			}
		}
		if fallback == nil {
			return auth.EmptyCredential, nil
		}
		return fallback(ctx, host)
	}
}

// scopeRepositories returns the repository names of "repository:NAME:ACTIONS"
// scopes, in order.
func scopeRepositories(scopes []string) []string {
	var repos []string
	for _, s := range scopes {
		rest, ok := strings.CutPrefix(s, "repository:")
		if !ok {
			continue
		}
		// The name may not hold ':' (a registry's port is not part of it),
		// so the last ':' separates the actions.
		if i := strings.LastIndexByte(rest, ':'); i > 0 {
			repos = append(repos, rest[:i])
		}
	}
	return repos
}

// keyOf returns the repository key of an image reference as CRI sends it
// ("busybox", "docker.io/library/busybox:1", "host:5000/app@sha256:…"),
// normalised the way containerd normalises it, with oras's host name.
func keyOf(image string) (repoKey, error) {
	named, err := reference.ParseDockerRef(image)
	if err != nil {
		return repoKey{}, fmt.Errorf("parse image reference %q: %w", image, err)
	}
	ref, err := registry.ParseReference(reference.TrimNamed(named).String())
	if err != nil {
		return repoKey{}, fmt.Errorf("parse image reference %q: %w", image, err)
	}
	return repoKey{host: ref.Host(), repository: ref.Repository}, nil
}

// errBadAuth is the error for an auth field that is not base64 of
// "user:password". It quotes nothing of the field: the field is a secret.
var errBadAuth = errors.New(`auth is not base64 of "user:password"`)

// credentialOf turns CRI's AuthConfig into oras's Credential: user and
// password (given as such or in the base64 auth field, as in a Docker
// config), the identity token as the refresh token oras trades for an
// access token, and the registry token as that access token itself.
// server_address is not used: kubelet already chose these credentials for
// this image, and they are kept for its repository only.
func credentialOf(a *runtime.AuthConfig) (auth.Credential, []string, error) {
	var cred auth.Credential
	var kinds []string
	if a == nil {
		return cred, nil, nil
	}
	cred.Username, cred.Password = a.GetUsername(), a.GetPassword()
	if cred.Username != "" || cred.Password != "" {
		kinds = append(kinds, "username/password")
	}
	if a.GetAuth() != "" {
		user, pass, err := decodeAuth(a.GetAuth())
		if err != nil {
			return auth.EmptyCredential, nil, err
		}
		if cred.Username == "" && cred.Password == "" {
			cred.Username, cred.Password = user, pass
		}
		kinds = append(kinds, "auth")
	}
	if t := a.GetIdentityToken(); t != "" {
		cred.RefreshToken = t
		kinds = append(kinds, "identity token")
	}
	if t := a.GetRegistryToken(); t != "" {
		cred.AccessToken = t
		kinds = append(kinds, "registry token")
	}
	return cred, kinds, nil
}

// decodeAuth splits the base64 "user:password" of a Docker config's auth
// field. Docker pads some with NULs; they are not part of the password.
func decodeAuth(s string) (user, password string, err error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return "", "", errBadAuth
	}
	user, password, ok := strings.Cut(string(b), ":")
	if !ok || user == "" {
		return "", "", errBadAuth
	}
	return user, strings.TrimRight(password, "\x00"), nil
}
