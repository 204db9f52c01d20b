package fs

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// rejectedDirName is the directory under the FS root holding one record
// per (layer, zTOC) pair that failed verification. It outlives restarts,
// so that a daemon restarted under a crash loop, or a node rebooted, never
// mounts a zTOC already proven not to match its layer.
const rejectedDirName = "rejected"

// ErrZtocRejected reports a layer whose zTOC failed verification before
// (on this node, possibly in an earlier run of the daemon); Mount refuses
// it so the layer takes another path. cmd makes Mount's error also wrap
// the index package's sentinel (WithRejectedError) so that the snapshotter
// can name the reason.
var ErrZtocRejected = errors.New("zTOC failed verification before")

// Rejection is the on-disk record of a layer whose zTOC failed
// verification.
type Rejection struct {
	// Layer and Ztoc name the pair that did not match.
	Layer digest.Digest `json:"layer"`
	Ztoc  string        `json:"ztoc"`
	// Image is the image reference the layer was mounted for.
	Image string `json:"image,omitempty"`
	// Reason is the verification error, as logged.
	Reason string `json:"reason"`
	// At is when the failure was found.
	At time.Time `json:"at"`
}

// rejections stores Rejection records as small JSON files, one per pair.
type rejections struct{ dir string }

func (r rejections) path(layer digest.Digest, ztocID string) string {
	return filepath.Join(r.dir, layer.Encoded()+"-"+ztocID+".json")
}

// record writes rej atomically (temp file, rename).
func (r rejections) record(rej Rejection) error {
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return fmt.Errorf("record rejected zTOC: %w", err)
	}
	b, err := json.MarshalIndent(rej, "", "  ")
	if err != nil {
		return fmt.Errorf("record rejected zTOC: %w", err)
	}
	tmp, err := os.CreateTemp(r.dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("record rejected zTOC: %w", err)
	}
	_, werr := tmp.Write(append(b, '\n'))
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("record rejected zTOC: %w", err)
	}
	if err := os.Rename(tmp.Name(), r.path(rej.Layer, rej.Ztoc)); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("record rejected zTOC: %w", err)
	}
	return nil
}

// lookup returns the record of the pair, if any. An unreadable record
// counts as one: refusing a layer is safe, mounting a rejected one is not.
func (r rejections) lookup(layer digest.Digest, ztocID string) (Rejection, bool) {
	b, err := os.ReadFile(r.path(layer, ztocID))
	if errors.Is(err, os.ErrNotExist) {
		return Rejection{}, false
	}
	rej := Rejection{Layer: layer, Ztoc: ztocID}
	if err != nil || json.Unmarshal(b, &rej) != nil {
		rej.Reason = fmt.Sprintf("unreadable rejection record (%v)", err)
	}
	return rej, true
}

// ReadRejections returns every rejection record under the daemon root
// (for "ociseek explain"); a missing directory means none.
func ReadRejections(root string) ([]Rejection, error) {
	dir := filepath.Join(root, rejectedDirName)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read rejected zTOCs: %w", err)
	}
	var out []Rejection
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read rejected zTOCs: %w", err)
		}
		var rej Rejection
		if err := json.Unmarshal(b, &rej); err != nil {
			return nil, fmt.Errorf("read rejected zTOC record %s: %w", e.Name(), err)
		}
		out = append(out, rej)
	}
	return out, nil
}
