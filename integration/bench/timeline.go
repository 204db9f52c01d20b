package bench

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ociseek/ociseek/integration/harness"
	"github.com/ociseek/ociseek/snapshot"
)

// Step is one part of the time to the first output.
type Step struct {
	// Name says what happened.
	Name string
	// Took is how long it took.
	Took time.Duration
}

// Step names, in the order of a start.
const (
	StepResolve      = "resolve, config, unpack begins (client)"
	StepDiscovery    = "index discovery (base layer's mount attempt)"
	StepUnpack       = "local unpack of the base layer"
	StepBetween      = "client, between the layers"
	StepZtocFetch    = "zTOC fetch"
	StepMount        = "zTOC parse, blob probe, FUSE mount"
	StepCommit       = "commit of the lazy layer"
	StepContainer    = "container start (client, containerd, runc) until its read of hello.txt's span reaches the registry"
	StepHelloSpan    = "transfer of that span"
	StepFirstRead    = "decompression to the output"
	StepUnaccounted  = "rest"
	timelineMinSteps = 3
)

// probeRange is the Range of the daemon's blob probe at mount time (one
// byte, to learn the blob is there and how to reach it): not a read.
const probeRange = "bytes=0-0"

// timeline puts the daemon's layer timings (snapshot labels) and the
// registry's view (blob GETs through the counting proxy, gets) together
// into the steps from t0 to the first output at first. It returns nil
// when the snapshotter recorded no timings.
func (r *Runner) timeline(ctx context.Context, c *harness.Containerd, t0, first time.Time, gets []*harness.BlobGet) []Step {
	base, okBase := layerTimings(ctx, c, r.Layers.BaseChain)
	data, okData := layerTimings(ctx, c, r.Layers.DataChain)
	if !okBase || !okData {
		return nil
	}
	var ztocEnd time.Time
	var hello *harness.BlobGet
	lastByte := fmt.Sprintf("-%d", r.Layers.DataSize-1)
	for _, g := range gets {
		switch {
		case g.Digest == r.Layers.Data.String() && strings.HasSuffix(g.Range, lastByte):
			// The span at the blob's end holds /data/hello.txt, the
			// layer's last file: its GET is the container's read.
			if hello == nil || g.Start.Before(hello.Start) {
				hello = g
			}
		case g.Digest != r.Layers.Data.String() && g.Digest != r.Layers.Base.String() && g.Range == "" &&
			g.Bytes() > 64<<10 && ztocEnd.IsZero():
			// The first whole-blob GET of neither layer and more than a
			// config's size: the zTOC.
			ztocEnd = g.End()
		}
	}
	var helloStart, helloEnd time.Time
	if hello != nil {
		helloStart, helloEnd = hello.Start, hello.End()
	}
	return buildTimeline(t0, first, base, data, ztocEnd, helloStart, helloEnd)
}

// buildTimeline makes the steps from marks in time order; a mark missing
// (zero) or out of order merges its step into the next one, so the steps
// always add up to first - t0.
func buildTimeline(t0, first time.Time, base, data snapshot.Timings, ztocEnd, helloStart, helloEnd time.Time) []Step {
	marks := []struct {
		name string
		at   time.Time
	}{
		{StepResolve, base.Start},
		{StepDiscovery, base.Start.Add(base.Mount)},
		{StepUnpack, base.Start.Add(base.Total)},
		{StepBetween, data.Start},
		{StepZtocFetch, ztocEnd},
		{StepMount, data.Start.Add(data.Mount)},
		{StepCommit, data.Start.Add(data.Total)},
		{StepContainer, helloStart},
		{StepHelloSpan, helloEnd},
		{StepFirstRead, first},
	}
	var steps []Step
	prev := t0
	for _, m := range marks {
		if m.at.IsZero() || m.at.Before(prev) || m.at.After(first) {
			continue
		}
		steps = append(steps, Step{Name: m.name, Took: m.at.Sub(prev)})
		prev = m.at
	}
	if rest := first.Sub(prev); rest > 0 {
		steps = append(steps, Step{Name: StepUnaccounted, Took: rest})
	}
	if len(steps) < timelineMinSteps {
		return nil
	}
	return steps
}

// medianTimeline returns, for each step name in the order first seen, the
// median of its durations over the runs (a run without the step counts
// as zero).
func medianTimeline(runs [][]Step) []Step {
	var names []string
	byName := map[string][]time.Duration{}
	for _, steps := range runs {
		for _, s := range steps {
			if _, ok := byName[s.Name]; !ok {
				names = append(names, s.Name)
			}
			byName[s.Name] = append(byName[s.Name], s.Took)
		}
	}
	out := make([]Step, 0, len(names))
	for _, n := range names {
		ds := byName[n]
		for len(ds) < len(runs) {
			ds = append(ds, 0)
		}
		out = append(out, Step{Name: n, Took: median(ds)})
	}
	return out
}

// formatTimeline writes steps as a markdown table with cumulative times.
func formatTimeline(steps []Step) string {
	var b strings.Builder
	b.WriteString("| step | took | ends at |\n|---|---:|---:|\n")
	var at time.Duration
	for _, s := range steps {
		at += s.Took
		fmt.Fprintf(&b, "| %s | %.3f s | %.3f s |\n", s.Name, s.Took.Seconds(), at.Seconds())
	}
	return b.String()
}
