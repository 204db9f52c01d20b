package regtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// distributionLeeway is how long distribution v3.1.2 still accepts a token
// after its exp claim (and before its nbf): registry/auth/token.Leeway, a
// package variable its configuration cannot change. The token server
// writes exp that much earlier, so the registry refuses a token TTL after
// it was issued, as a registry without leeway would.
const distributionLeeway = 60 * time.Second

// Token-auth names both sides agree on (the registry's auth.token
// service and issuer options).
const (
	tokenService = "regtest-registry"
	tokenIssuer  = "regtest-token-server"
)

// TokenServer is a token server of the docker token authentication scheme
// (https://distribution.github.io/distribution/spec/auth/token/) for a
// registry from StartWithTokenAuth. It checks a user and password (HTTP
// basic auth on GET, or the OAuth2 password grant on POST) and issues
// ES256 JWTs, signed with a key whose self-signed certificate is the
// registry's rootcertbundle and travels in the x5c header. Each token
// grants exactly the repository scopes asked for, nothing more, and lives
// TTL.
type TokenServer struct {
	// URL is the token endpoint (the registry's realm).
	URL string
	// TTL is each token's life at the registry.
	TTL time.Duration

	user, password string
	key            *ecdsa.PrivateKey
	cert           []byte // DER of the self-signed certificate of key
	srv            *httptest.Server

	mu     sync.Mutex
	issued []IssuedToken
	// stale is how many of the next tokens are issued already expired,
	// as by a token server whose clock is behind.
	stale int
}

// IssuedToken is one token the server handed out.
type IssuedToken struct {
	// Scopes are the scopes granted, e.g. "repository:app:pull".
	Scopes []string
	// Issued is when it was signed.
	Issued time.Time
	// Stale says it was issued already expired (IssueStale).
	Stale bool
}

// StartTokenServer starts a token server on 127.0.0.1 that grants tokens
// of life ttl to user with password. It stops when the test ends.
func StartTokenServer(t testing.TB, user, password string, ttl time.Duration) *TokenServer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("token server key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: tokenIssuer},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("token server certificate: %v", err)
	}
	ts := &TokenServer{TTL: ttl, user: user, password: password, key: key, cert: cert}
	ts.srv = httptest.NewServer(http.HandlerFunc(ts.serve))
	t.Cleanup(ts.srv.Close)
	ts.URL = ts.srv.URL + "/token"
	return ts
}

// StartWithTokenAuth starts a distribution registry (KindDistribution)
// configured with `auth: token` against ts: every request needs a bearer
// token from ts for the repository and action. Its User and Password are
// ts's, so Repository and the push helpers authenticate; Requests reads
// its access log.
func StartWithTokenAuth(t testing.TB, ts *TokenServer) *Registry {
	t.Helper()
	bin := registryBinary(t, KindDistribution)
	r := &Registry{Kind: KindDistribution, Dir: t.TempDir(), User: ts.user, Password: ts.password,
		t: t, bin: bin, token: ts}
	r.launch(t)
	return r
}

// tokenConfig writes ts's certificate as the root bundle and returns the
// registry's auth section.
func (r *Registry) tokenConfig() (string, error) {
	path := filepath.Join(r.Dir, "token-root.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.token.cert})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return "", fmt.Errorf("write token root bundle: %w", err)
	}
	return fmt.Sprintf(`auth:
  token:
    realm: %s
    service: %s
    issuer: %s
    rootcertbundle: %s
`, r.token.URL, tokenService, tokenIssuer, path), nil
}

// Issued returns the tokens handed out so far, oldest first.
func (ts *TokenServer) Issued() []IssuedToken {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]IssuedToken(nil), ts.issued...)
}

// IssueStale makes the next n tokens expired when issued, as a token
// server with a slow clock would hand out.
func (ts *TokenServer) IssueStale(n int) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.stale = n
}

// tokenAnswer is the token endpoint's JSON answer; both names of the token
// are set, as the spec recommends for compatibility.
type tokenAnswer struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
	IssuedAt    string `json:"issued_at"`
}

// serve answers GET (basic auth, scope query parameters) and POST (OAuth2
// password grant, space-separated scope) token requests.
func (ts *TokenServer) serve(w http.ResponseWriter, req *http.Request) {
	var user, pass, service string
	var scopes []string
	switch req.Method {
	case http.MethodGet:
		var ok bool
		if user, pass, ok = req.BasicAuth(); !ok {
			user, pass = "", ""
		}
		service = req.URL.Query().Get("service")
		for _, s := range req.URL.Query()["scope"] {
			scopes = append(scopes, strings.Fields(s)...)
		}
	case http.MethodPost:
		if err := req.ParseForm(); err != nil || req.PostForm.Get("grant_type") != "password" {
			http.Error(w, `{"error":"unsupported_grant_type"}`, http.StatusBadRequest)
			return
		}
		user, pass = req.PostForm.Get("username"), req.PostForm.Get("password")
		service = req.PostForm.Get("service")
		scopes = strings.Fields(req.PostForm.Get("scope"))
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if user != ts.user || pass != ts.password {
		w.Header().Set("Www-Authenticate", `Basic realm="regtest-token"`)
		http.Error(w, `{"details":"wrong user or password"}`, http.StatusUnauthorized)
		return
	}
	if service != tokenService {
		http.Error(w, fmt.Sprintf(`{"details":"unknown service %q"}`, service), http.StatusBadRequest)
		return
	}
	tok, err := ts.issue(scopes)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	now := time.Now()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(tokenAnswer{Token: tok, AccessToken: tok,
		ExpiresIn: max(1, int(ts.TTL/time.Second)), IssuedAt: now.UTC().Format(time.RFC3339)})
}

// resourceActions is one entry of the token's access claim.
type resourceActions struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// issue signs a token granting scopes ("repository:NAME:ACTION[,ACTION]").
func (ts *TokenServer) issue(scopes []string) (string, error) {
	var access []resourceActions
	for _, s := range scopes {
		// The name may hold a port-less path but never ':'; split from
		// both ends.
		typ, rest, ok1 := strings.Cut(s, ":")
		i := strings.LastIndex(rest, ":")
		if !ok1 || i < 0 || typ != "repository" {
			return "", fmt.Errorf("scope %q: want repository:NAME:ACTIONS", s)
		}
		access = append(access, resourceActions{Type: typ, Name: rest[:i], Actions: strings.Split(rest[i+1:], ",")})
	}
	now := time.Now()
	ts.mu.Lock()
	stale := ts.stale > 0
	if stale {
		ts.stale--
	}
	ts.issued = append(ts.issued, IssuedToken{Scopes: append([]string(nil), scopes...), Issued: now, Stale: stale})
	ts.mu.Unlock()
	exp := now.Add(ts.TTL - distributionLeeway)
	if stale {
		exp = now.Add(-distributionLeeway - time.Minute)
	}
	claims := map[string]any{
		"iss": tokenIssuer, "sub": ts.user, "aud": tokenService,
		"exp": exp.Unix(), "nbf": now.Add(-time.Second).Unix(), "iat": now.Unix(),
		"jti": fmt.Sprintf("regtest-%d", now.UnixNano()), "access": access,
	}
	return ts.sign(claims)
}

// sign encodes claims as a compact JWS with ES256 (RFC 7515, 7518 section
// 3.4: the signature is r and s, 32 bytes each, big-endian).
func (ts *TokenServer) sign(claims map[string]any) (string, error) {
	header := map[string]any{"typ": "JWT", "alg": "ES256", "x5c": []string{base64.StdEncoding.EncodeToString(ts.cert)}}
	hb, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	signed := enc.EncodeToString(hb) + "." + enc.EncodeToString(cb)
	sum := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, ts.key, sum[:])
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signed + "." + enc.EncodeToString(sig), nil
}
