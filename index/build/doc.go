// Package build makes and publishes SOCI artifacts: the zTOCs of an image's
// layers, the SOCI index manifests that list them (v1, bound to the image
// by a subject; v2, bound by an annotation on a re-written image manifest),
// and SOCI-enabled (v2) image indices.
//
// Concepts:
//   - Layers are streamed straight from the source (a registry repository or
//     an OCI image layout) into the zTOC builder. Nothing is buffered whole:
//     memory is bounded by the builder's span state, not by layer size. Each
//     layer's size and digest are verified while it streams; a mismatch fails
//     the build before anything is published.
//   - A v1 index is pushed with a subject. Registries with the OCI referrers
//     API index it themselves; for the others the client maintains the
//     "sha256-<hex>" fallback tag, an OCI index listing the referrers. That
//     read-modify-write races between clients (two creates for one image can
//     each drop the other's entry), so Create reads the tag back and merges
//     its own descriptor again, with jittered backoff, until its entry has
//     survived a settle period (see PublishOptions).
//   - Convert writes a new OCI image index: every original entry in place,
//     converted manifests re-serialised as OCI manifests carrying the
//     com.amazon.soci.index-digest annotation, and one v2 SOCI index entry
//     appended per converted platform. The output is byte-identical to the
//     AWS tooling's for the same input and options.
//
// Hazards: registries answer with HTML, truncate bodies and lie about
// digests. Every manifest read is bounded (MaxManifestBytes) and verified;
// errors name the registry or layout and the step. Tags are written last, so
// a failed run leaves untagged blobs at worst, never a tag pointing at
// something partial.
//
// Format facts (media types, annotations, the v1 subject binding, the v2
// image-manifest annotation) follow the AWS soci-snapshotter's index format
// (github.com/awslabs/soci-snapshotter, soci/ and docs/soci-index-manifest-v2.md).
package build
