package discover

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/ociseek/ociseek/index"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// markUnauthorized makes err wrap index.ErrUnauthorized when the registry
// refused a request for want of credentials: an HTTP 401 or 403 (from the
// registry or its token service), or a basic-auth challenge the daemon
// had no credentials for. The snapshotter then leaves the layer to
// containerd, which pulls with its own, and says why ("unauthorized").
func markUnauthorized(err error) error {
	if err == nil || errors.Is(err, index.ErrUnauthorized) {
		return err
	}
	var er *errcode.ErrorResponse
	refused := errors.Is(err, auth.ErrBasicCredentialNotFound) ||
		errors.As(err, &er) && (er.StatusCode == http.StatusUnauthorized || er.StatusCode == http.StatusForbidden)
	if !refused {
		return err
	}
	return fmt.Errorf("%w: %w", err, index.ErrUnauthorized)
}
