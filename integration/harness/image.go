package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	orasremote "oras.land/oras-go/v2/registry/remote"
)

// Image is a runnable test image: layers bottom first and the process to
// start.
type Image struct {
	// Layers are the layers, bottom first.
	Layers []Layer
	// Cmd is the default command.
	Cmd []string
}

// PushImage pushes img (layers, config, manifest) to host/repo:tag over
// plain HTTP and returns the manifest descriptor.
func PushImage(ctx context.Context, host, repo, tag string, img Image) (ocispec.Descriptor, error) {
	rp, err := orasremote.NewRepository(host + "/" + repo)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	rp.PlainHTTP = true
	cfg := ocispec.Image{
		Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
		Config: ocispec.ImageConfig{
			Cmd:        img.Cmd,
			Env:        []string{"PATH=/bin"},
			WorkingDir: "/",
		},
		RootFS: ocispec.RootFS{Type: "layers"},
	}
	manifest := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
	}
	for _, l := range img.Layers {
		desc, err := pushBlob(ctx, rp, l.MediaType, l.Blob)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		manifest.Layers = append(manifest.Layers, desc)
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.DiffID)
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if manifest.Config, err = pushBlob(ctx, rp, ocispec.MediaTypeImageConfig, cfgJSON); err != nil {
		return ocispec.Descriptor{}, err
	}
	mJSON, err := json.Marshal(manifest)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, mJSON)
	if err := rp.PushReference(ctx, desc, bytes.NewReader(mJSON), tag); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("push manifest to %s/%s:%s: %w", host, repo, tag, err)
	}
	return desc, nil
}

func pushBlob(ctx context.Context, rp *orasremote.Repository, mediaType string, data []byte) (ocispec.Descriptor, error) {
	desc := content.NewDescriptorFromBytes(mediaType, data)
	ok, err := rp.Blobs().Exists(ctx, desc)
	if err != nil {
		return desc, fmt.Errorf("check blob %s: %w", desc.Digest, err)
	}
	if ok {
		return desc, nil
	}
	if err := rp.Blobs().Push(ctx, desc, bytes.NewReader(data)); err != nil {
		return desc, fmt.Errorf("push blob %s: %w", desc.Digest, err)
	}
	return desc, nil
}
