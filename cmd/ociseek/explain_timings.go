package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/ociseek/ociseek/snapshot"
)

// writeTimingsTable prints the daemon's timings of each layer it served
// (bottom first): LAYER START MOUNT UNPACK TOTAL, START in seconds after
// the earliest layer's start, which heads the table as a time stamp. A
// layer without the label (served by containerd, or by an older daemon)
// shows dashes; a label that does not decode is reported in its row.
func writeTimingsTable(w io.Writer, rows []explainRow) error {
	parsed := make([]*snapshot.Timings, len(rows))
	errs := make([]error, len(rows))
	var first time.Time
	for i, r := range rows {
		if r.Timings == "" {
			continue
		}
		tm, err := snapshot.ParseTimings(r.Timings)
		if err != nil {
			errs[i] = err
			continue
		}
		parsed[i] = &tm
		if first.IsZero() || tm.Start.Before(first) {
			first = tm.Start
		}
	}
	if first.IsZero() {
		_, err := fmt.Fprintln(w, "\nno layer of this image carries the daemon's timings (served by containerd, or by an older daemon)")
		return err
	}
	fmt.Fprintf(w, "\ntimings: first layer prepared at %s\n", first.UTC().Format(time.RFC3339Nano))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LAYER\tSTART\tMOUNT\tUNPACK\tTOTAL")
	for i, tm := range parsed {
		switch {
		case errs[i] != nil:
			fmt.Fprintf(tw, "%d\t-\t-\t-\t-\t(%v)\n", i+1, errs[i])
		case tm == nil:
			fmt.Fprintf(tw, "%d\t-\t-\t-\t-\n", i+1)
		default:
			fmt.Fprintf(tw, "%d\t+%.3fs\t%s\t%s\t%s\n", i+1, tm.Start.Sub(first).Seconds(),
				seconds(tm.Mount), seconds(tm.Unpack), seconds(tm.Total))
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write timings: %w", err)
	}
	return nil
}

// seconds formats a step's duration in seconds, "-" for a step not run.
func seconds(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.3fs", d.Seconds())
}
