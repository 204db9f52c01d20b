package build

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	orasremote "oras.land/oras-go/v2/registry/remote"
)

// PublishOptions tune how a v1 index is made discoverable on registries
// without the referrers API. The zero value uses the defaults.
type PublishOptions struct {
	// Settle is how long our entry must stay in the fallback tag index,
	// counted from our last write, before the publish is done. Another
	// client that read the tag before our write can only clobber it within
	// its own read-modify-write time, so Settle must exceed that; the
	// default is 1s. Zero means the default.
	Settle time.Duration
	// MaxMerges bounds how often our entry is merged back after being
	// clobbered; zero means 30.
	MaxMerges int
	// Backoff is the base of the jittered exponential wait before a merge;
	// zero means 20ms. Waits are capped at 2s.
	Backoff time.Duration
}

func (p PublishOptions) settle() time.Duration {
	if p.Settle <= 0 {
		return time.Second
	}
	return p.Settle
}

func (p PublishOptions) maxMerges() int {
	if p.MaxMerges <= 0 {
		return 30
	}
	return p.MaxMerges
}

// backoff returns a random wait in [0, base·2^attempt), capped at 2s, so
// writers that collided spread out instead of colliding again.
func (p PublishOptions) backoff(attempt int) time.Duration {
	base := p.Backoff
	if base <= 0 {
		base = 20 * time.Millisecond
	}
	limit := base << min(attempt, 10)
	limit = min(limit, 2*time.Second)
	return rand.N(limit) + 1
}

// FallbackTag is the tag under which clients index the referrers of
// subject on registries without the referrers API: "<alg>-<hex>",
// e.g. "sha256-acad…" (distribution-spec v1.1 "referrers tag schema",
// https://github.com/opencontainers/distribution-spec/blob/v1.1.1/spec.md#referrers-tag-schema).
func FallbackTag(subject digest.Digest) string {
	alg, enc := subject.Algorithm().String(), subject.Encoded()
	if len(alg) > 32 {
		alg = alg[:32]
	}
	if len(enc) > 64 {
		enc = enc[:64]
	}
	return alg + "-" + enc
}

// tagIndex is the content of a fallback tag.
type tagIndex struct {
	found     bool
	desc      ocispec.Descriptor
	referrers []ocispec.Descriptor
}

func (t tagIndex) has(d digest.Digest) bool {
	for _, r := range t.referrers {
		if r.Digest == d {
			return true
		}
	}
	return false
}

// readTag reads the fallback tag index. A missing tag, or one that names
// something other than an OCI index, reads as empty, as oras treats it.
func readTag(ctx context.Context, repo registry.Repository, tag, where string) (tagIndex, error) {
	d, rc, err := repo.FetchReference(ctx, tag)
	if errors.Is(err, errdef.ErrNotFound) {
		return tagIndex{}, nil
	}
	if err != nil {
		return tagIndex{}, fmt.Errorf("fetch fallback tag %s at %s: %w", tag, where, err)
	}
	defer rc.Close()
	if d.MediaType != ocispec.MediaTypeImageIndex {
		return tagIndex{}, nil
	}
	if d.Size > MaxManifestBytes {
		return tagIndex{}, fmt.Errorf("fetch fallback tag %s at %s: size %d exceeds the %d-byte limit", tag, where, d.Size, MaxManifestBytes)
	}
	buf, err := content.ReadAll(rc, d)
	if err != nil {
		return tagIndex{}, fmt.Errorf("read fallback tag %s at %s: %w", tag, where, err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(buf, &idx); err != nil {
		return tagIndex{}, fmt.Errorf("decode fallback tag %s at %s: %w", tag, where, err)
	}
	return tagIndex{found: true, desc: d, referrers: idx.Manifests}, nil
}

// writeTag puts an OCI index listing referrers under the fallback tag, in
// the encoding oras and the AWS tooling use.
func writeTag(ctx context.Context, repo registry.Repository, tag string, referrers []ocispec.Descriptor, where string) (ocispec.Descriptor, error) {
	if referrers == nil {
		referrers = []ocispec.Descriptor{}
	}
	buf, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: referrers,
	})
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("encode fallback tag index: %w", err)
	}
	d := content.NewDescriptorFromBytes(ocispec.MediaTypeImageIndex, buf)
	if err := repo.PushReference(ctx, d, bytes.NewReader(buf), tag); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("write fallback tag %s at %s: %w", tag, where, err)
	}
	return d, nil
}

// publisher pushes one v1 index and makes sure it is listed.
type publisher struct {
	repo  registry.Repository
	opts  PublishOptions
	where string
	// slowest is the longest registry round trip seen (push, tag read or
	// write); the settle period is stretched to several of them, because
	// a loaded client or registry makes other writers' read-modify-write
	// slower too.
	slowest time.Duration
}

// settle is how long a change must survive before it counts.
func (p *publisher) settle() time.Duration {
	return max(p.opts.settle(), 4*p.slowest)
}

// timed runs f and records its duration in p.slowest.
func (p *publisher) timed(f func() error) error {
	start := time.Now()
	err := f()
	p.slowest = max(p.slowest, time.Since(start))
	return err
}

// publishV1 pushes the index manifest (its blobs must be in place) and
// returns once the index is listed among the subject's referrers, and has
// stayed listed for the settle period: by the registry's referrers API
// (some registries, e.g. olareg v0.1.2, update that list without locking
// and lose entries under concurrent pushes: a lost entry is pushed again),
// or in the fallback tag index, which we merge into until it holds.
func (p *publisher) publishV1(ctx context.Context, subject, idx ocispec.Descriptor, body []byte, annotations map[string]string) error {
	if r, ok := p.repo.(*orasremote.Repository); ok {
		// oras deletes the superseded tag index right after its own
		// merge; across processes that fails (the other writer deleted
		// it first) or deletes what another writer still reads. We
		// collect superseded indices ourselves, once settled.
		r.SkipReferrersGC = true
	}
	tag := FallbackTag(subject.Digest)
	before, err := readTag(ctx, p.repo, tag, p.where)
	if err != nil {
		return err
	}
	if err := p.push(ctx, idx, body); err != nil {
		return err
	}
	pushed := time.Now()
	listed, err := p.listed(ctx, subject, idx)
	if err != nil {
		return err
	}
	if p.referrersAPI(listed) {
		return p.settleAPI(ctx, subject, idx, body, pushed)
	}
	ref := ocispec.Descriptor{MediaType: idx.MediaType, Digest: idx.Digest, Size: idx.Size,
		ArtifactType: idx.ArtifactType, Annotations: annotations}
	superseded, err := p.converge(ctx, tag, convergence{
		// oras's own merge, inside the push, was our first write.
		lastWrite: pushed,
		ok:        func(t tagIndex) bool { return t.has(ref.Digest) },
		fix:       func(t tagIndex) []ocispec.Descriptor { return append(t.referrers, ref) },
		what:      "SOCI index " + ref.Digest.String() + " still missing",
	})
	if err != nil {
		return err
	}
	if before.found {
		superseded = append(superseded, before.desc)
	}
	p.collect(ctx, tag, superseded)
	return nil
}

// push puts the index manifest; through oras this also merges it into the
// fallback tag when the registry does not index it.
func (p *publisher) push(ctx context.Context, idx ocispec.Descriptor, body []byte) error {
	err := p.timed(func() error { return p.repo.Push(ctx, idx, bytes.NewReader(body)) })
	if err != nil {
		return fmt.Errorf("push SOCI index %s to %s: %w", idx.Digest, p.where, err)
	}
	return nil
}

// referrersAPI reports whether the registry indexes referrers itself. For
// an oras repository it reads back the capability oras learned while
// pushing and listing: oras refuses to change a learned value, so
// proposing "supported" succeeds only when it is so. Other repositories
// count as having the API when they listed the index.
func (p *publisher) referrersAPI(listed bool) bool {
	if r, ok := p.repo.(*orasremote.Repository); ok {
		return r.SetReferrersCapability(true) == nil
	}
	return listed
}

// listed asks the registry (through oras, which falls back to the tag
// when the API is missing) whether idx is among subject's referrers.
func (p *publisher) listed(ctx context.Context, subject, idx ocispec.Descriptor) (bool, error) {
	listed := false
	err := p.repo.Referrers(ctx, subject, idx.ArtifactType, func(rs []ocispec.Descriptor) error {
		for _, r := range rs {
			listed = listed || r.Digest == idx.Digest
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("list referrers of %s at %s: %w", subject.Digest, p.where, err)
	}
	return listed, nil
}

// settleAPI waits out the settle period after our last push and checks the
// referrers API still lists idx, pushing the manifest again when not.
func (p *publisher) settleAPI(ctx context.Context, subject, idx ocispec.Descriptor, body []byte, pushed time.Time) error {
	for pushes := 1; ; {
		if err := sleep(ctx, p.settle()-time.Since(pushed)); err != nil {
			return err
		}
		listed, err := p.listed(ctx, subject, idx)
		if err != nil || listed {
			return err
		}
		pushes++
		if pushes > p.opts.maxMerges() {
			return fmt.Errorf("referrers of %s at %s: SOCI index %s still missing after %d pushes", subject.Digest, p.where, idx.Digest, pushes-1)
		}
		if err := sleep(ctx, p.opts.backoff(pushes)); err != nil {
			return err
		}
		if err := p.push(ctx, idx, body); err != nil {
			return err
		}
		pushed = time.Now()
	}
}

// convergence describes a wanted state of the fallback tag.
type convergence struct {
	lastWrite time.Time                           // zero: we have not written yet
	ok        func(tagIndex) bool                 // the tag is as wanted
	fix       func(tagIndex) []ocispec.Descriptor // the referrers to write when not
	what      string                              // for the error when it never converges
}

// converge reads the tag until c.ok holds and has held for the settle
// period since our last write; when it does not hold, it waits a random
// while and writes c.fix of what is there then (deleting the tag index when
// that is empty). It returns the tag indices our writes replaced.
//
// Why this is enough: a concurrent writer that read the tag before our
// write can only overwrite it within its own read-modify-write time, which
// the settle period exceeds; writers that read after our write keep our
// change.
func (p *publisher) converge(ctx context.Context, tag string, c convergence) ([]ocispec.Descriptor, error) {
	var superseded []ocispec.Descriptor
	for merges := 0; ; {
		var cur tagIndex
		err := p.timed(func() (err error) { cur, err = readTag(ctx, p.repo, tag, p.where); return err })
		if err != nil {
			return superseded, err
		}
		if c.ok(cur) {
			wait := p.settle() - time.Since(c.lastWrite)
			if c.lastWrite.IsZero() || wait <= 0 {
				return superseded, nil
			}
			if err := sleep(ctx, wait); err != nil {
				return superseded, err
			}
			continue
		}
		merges++
		if merges > p.opts.maxMerges() {
			return superseded, fmt.Errorf("fallback tag %s at %s: %s after %d merges", tag, p.where, c.what, merges-1)
		}
		if !c.lastWrite.IsZero() {
			// Clobbered by a concurrent writer: spread out before merging
			// again, or the same writers collide again.
			if err := sleep(ctx, p.opts.backoff(merges)); err != nil {
				return superseded, err
			}
			if cur, err = readTag(ctx, p.repo, tag, p.where); err != nil {
				return superseded, err
			}
			if c.ok(cur) {
				continue
			}
		}
		if err := p.timed(func() error { return p.replaceTag(ctx, tag, cur, c.fix(cur)) }); err != nil {
			return superseded, err
		}
		c.lastWrite = time.Now()
		if cur.found {
			superseded = append(superseded, cur.desc)
		}
	}
}

// replaceTag writes referrers under tag; an empty list deletes the tag
// index instead (registries drop the tags of a deleted manifest), falling
// back to an empty index where deletes are refused.
func (p *publisher) replaceTag(ctx context.Context, tag string, cur tagIndex, referrers []ocispec.Descriptor) error {
	if len(referrers) > 0 || !cur.found {
		if len(referrers) == 0 {
			return nil
		}
		_, err := writeTag(ctx, p.repo, tag, referrers, p.where)
		return err
	}
	if err := p.repo.Delete(ctx, cur.desc); err == nil || errors.Is(err, errdef.ErrNotFound) {
		return nil
	}
	_, err := writeTag(ctx, p.repo, tag, nil, p.where)
	return err
}

// collect deletes superseded tag indices that the tag no longer names.
// It is best effort: a registry that refuses deletes keeps the garbage,
// and an index another writer already collected is simply gone.
func (p *publisher) collect(ctx context.Context, tag string, superseded []ocispec.Descriptor) {
	if len(superseded) == 0 {
		return
	}
	cur, err := readTag(ctx, p.repo, tag, p.where)
	if err != nil || !cur.found {
		return
	}
	done := map[digest.Digest]bool{cur.desc.Digest: true}
	for _, d := range superseded {
		if done[d.Digest] {
			continue
		}
		done[d.Digest] = true
		_ = p.repo.Delete(ctx, d) // best effort, see above
	}
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
