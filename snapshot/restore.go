package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// remoteLayer is a committed snapshot served by the FileSystem.
type remoteLayer struct {
	name   string
	id     string
	labels map[string]string
}

// Server is an optional extension of FileSystem, for one that took over
// the mounts of the previous process (their FUSE connections were kept
// alive across the restart): restore leaves the mounts it serves as they
// are, so running containers keep their files.
type Server interface {
	Serves(mountpoint string) bool
}

// restore makes the lazy snapshots of a previous run usable again: mounts
// the FileSystem took over are kept, stale ones (their FUSE server died
// with the old process) are released, then every other snapshot labelled
// LabelRemote is mounted again from its labels.
func (s *Snapshotter) restore(ctx context.Context, allowInvalid bool) error {
	entries, err := os.ReadDir(s.snapshotsDir())
	if err != nil {
		return fmt.Errorf("restore: list snapshot directories: %w", err)
	}
	served := func(mp string) bool {
		srv, ok := s.fs.(Server)
		return ok && srv.Serves(mp)
	}
	for _, e := range entries {
		mp := filepath.Join(s.snapshotsDir(), e.Name(), "fs")
		if served(mp) {
			continue
		}
		if err := s.unmount(ctx, mp); err != nil {
			return fmt.Errorf("restore: release stale mount: %w", err)
		}
	}
	layers, err := s.remoteLayers(ctx)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	for _, l := range layers {
		if served(s.upperPath(l.id)) {
			continue
		}
		mctx := ctx
		if ns := l.labels[LabelNamespace]; ns != "" {
			mctx = namespaces.WithNamespace(ctx, ns)
		}
		if err := s.fs.Mount(mctx, s.upperPath(l.id), l.labels); err != nil {
			if !allowInvalid {
				return fmt.Errorf("restore lazy layer %s (set allow_invalid_mounts_on_restart to start anyway): %w", l.name, err)
			}
			log.G(ctx).WithError(err).WithField("snapshot", l.name).Warn("lazy layer not restored; remove it and pull again")
		}
	}
	if len(layers) > 0 {
		log.G(ctx).Infof("restored %d lazy layers", len(layers))
	}
	return nil
}

// remoteLayers lists every committed lazy snapshot.
func (s *Snapshotter) remoteLayers(ctx context.Context) ([]remoteLayer, error) {
	var layers []remoteLayer
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, func(ctx context.Context, info snapshots.Info) error {
			if info.Labels[LabelRemote] == "" {
				return nil
			}
			id, _, _, err := storage.GetInfo(ctx, info.Name)
			if err != nil {
				return err
			}
			layers = append(layers, remoteLayer{name: info.Name, id: id, labels: info.Labels})
			return nil
		})
	})
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, nil // a new metastore has no buckets yet
	}
	if err != nil {
		return nil, fmt.Errorf("list lazy layers: %w", err)
	}
	return layers, nil
}

// checkParent checks that parent and the snapshots below it that are
// served lazily are still usable. A child built on an unusable layer would
// show I/O errors later; failing the Prepare now is clearer.
func (s *Snapshotter) checkParent(ctx context.Context, parent string) error {
	if parent == "" {
		return nil
	}
	var chain []remoteLayer
	if err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		for name := parent; name != ""; {
			id, info, _, err := storage.GetInfo(ctx, name)
			if err != nil {
				return fmt.Errorf("parent %s: %w", name, err)
			}
			if info.Labels[LabelRemote] != "" {
				chain = append(chain, remoteLayer{name: name, id: id, labels: info.Labels})
			}
			name = info.Parent
		}
		return nil
	}); err != nil {
		return err
	}
	for _, l := range chain {
		if err := s.fs.Check(ctx, s.upperPath(l.id), l.labels); err != nil {
			return fmt.Errorf("lazy layer %s is not usable (%v): %w", l.name, err, errdefs.ErrUnavailable)
		}
	}
	return nil
}

// checkParents is checkParent for the parent of the snapshot key.
func (s *Snapshotter) checkParents(ctx context.Context, key string) error {
	info, err := s.Stat(ctx, key)
	if err != nil {
		return err
	}
	return s.checkParent(ctx, info.Parent)
}
