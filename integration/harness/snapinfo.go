package harness

import (
	"encoding/json"
	"fmt"
)

// parseSnapshotInfo reads the labels out of `ctr snapshots info` output
// (containerd's snapshots.Info as indented JSON).
func parseSnapshotInfo(out string) (map[string]string, error) {
	var info struct {
		Labels map[string]string `json:"Labels"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		return nil, fmt.Errorf("parse ctr snapshots info output %q: %w", out, err)
	}
	return info.Labels, nil
}
