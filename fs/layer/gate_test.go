package layer

import (
	"context"
	"errors"
	"syscall"
	"testing"

	"github.com/ociseek/ociseek/ztoc"
)

// errVerifier fails every VerifyEntry with err, counting the calls.
type errVerifier struct {
	err   error
	calls int
}

func (v *errVerifier) VerifyEntry(ctx context.Context, e *ztoc.FileMetadata) error {
	v.calls++
	return v.err
}

// TestGateErrnos: a check cut short by the request's interruption (Go's
// preemption signal is enough) answers EINTR, so the kernel and the caller
// retry, and is asked again next time; a real failure answers EIO; a
// success is remembered.
func TestGateErrnos(t *testing.T) {
	n := &attrNode{m: &meta{checks: []*ztoc.FileMetadata{{Name: "etc/"}}}}
	interrupted, cancel := context.WithCancel(context.Background())
	cancel()
	v := &errVerifier{err: context.Canceled}
	n.gate.v = v
	if got := n.gate.open(interrupted, n); got != syscall.EINTR {
		t.Errorf("interrupted check: %v, want EINTR", got)
	}
	v.err = errors.New("tar header does not match")
	if got := n.gate.open(context.Background(), n); got != syscall.EIO {
		t.Errorf("failed check: %v, want EIO", got)
	}
	v.err = nil
	for range 2 {
		if got := n.gate.open(context.Background(), n); got != 0 {
			t.Errorf("passing check: %v", got)
		}
	}
	if v.calls != 3 {
		t.Errorf("VerifyEntry called %d times, want 3 (a success is remembered)", v.calls)
	}
}
