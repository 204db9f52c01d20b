package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/ociseek/ociseek/index/build"
)

// progressInterval limits how often the live status line is redrawn.
const progressInterval = 100 * time.Millisecond

// progressFunc returns the build.Options.Progress callback for w: a live
// per-layer byte count when w is a terminal, nil (quiet) otherwise, so that
// piped output holds only results.
func progressFunc(w io.Writer) func(build.LayerProgress) {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	p := &progress{w: w}
	return p.update
}

// progress draws one status line per finished layer and a live line for
// the layer that reported last. Reports arrive from several goroutines.
type progress struct {
	w io.Writer
	// mu guards last and the terminal itself.
	mu   sync.Mutex
	last time.Time
}

func (p *progress) update(lp build.LayerProgress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	name := shortDigest(lp.Layer.Digest.String())
	if lp.Done {
		status := "zTOC built"
		if lp.Skipped != "" {
			status = "skipped: " + lp.Skipped
		}
		fmt.Fprintf(p.w, "\r\033[K%s %10s  %s\n", name, humanBytes(lp.Layer.Size), status)
		return
	}
	if now := time.Now(); now.Sub(p.last) >= progressInterval {
		p.last = now
		fmt.Fprintf(p.w, "\r\033[K%s %10s / %s", name, humanBytes(lp.Read), humanBytes(lp.Layer.Size))
	}
}

// shortDigest abbreviates "sha256:<hex>" to "sha256:<12 hex>".
func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

// humanBytes formats n with a binary unit.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
