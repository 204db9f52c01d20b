// Package label declares the keys of the snapshot labels that ociseek's
// packages share and that containerd does not export: the SOCI ones of the
// remote-snapshot protocol (as the AWS soci-snapshotter names them). containerd
// copies a layer descriptor's "containerd.io/snapshot/" annotations into
// the labels of that layer's unpack Prepare; nerdctl's SOCI handler (and
// "ociseek pull") add these next to containerd's own cri.* keys, which
// live in containerd's pkg/snapshotters and are used from there.
//
// The keys sit in a package of their own, importing nothing, because their
// readers and writers are on different branches of the import graph: fs
// reads them to name the layer it mounts, snapshot reads the layer size to
// choose a path, and cmd/ociseek writes them; fs and snapshot may not
// import each other, nor fs index.
package label

const (
	// LayerSize is the layer blob's size in bytes, decimal. Optional: CRI
	// does not send it.
	LayerSize = "containerd.io/snapshot/remote/soci.size"
	// ImageLayersSize lists the sizes of the image's layers, comma
	// separated, in the order (and as many) as containerd's
	// cri.image-layers lists their digests.
	ImageLayersSize = "containerd.io/snapshot/remote/image.layers.size"
	// IndexDigest names the SOCI index to use instead of discovering one.
	// Optional; nerdctl sends it empty when no index was asked for.
	IndexDigest = "containerd.io/snapshot/remote/soci.index.digest"
)
