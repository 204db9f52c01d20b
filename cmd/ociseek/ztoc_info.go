package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/ztoc"
)

const ztocInfoHelp = `
Describe the zTOC in the file ZTOC: digest, sizes, spans and entries.

--json prints the whole zTOC as one JSON document (the format of the
reference fixtures' expect.json files, minus file contents): every
checkpoint with the sha256 of its window, every span digest and every TOC
entry with its PAX records.
`

func ztocInfoCommand() command {
	return command{name: "info", summary: "describe a zTOC file", run: runZtocInfo}
}

func runZtocInfo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("ociseek ztoc info", "[--json] [--spans] [--files] ZTOC", ztocInfoHelp, stderr)
	asJSON := fs.Bool("json", false, "print the whole zTOC as JSON")
	spans := fs.Bool("spans", false, "list every span (text output)")
	files := fs.Bool("files", false, "list every TOC entry (text output)")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	z, b, err := readZtocFile(pos[0])
	if err != nil {
		return fmt.Errorf("ztoc info: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(z.Info(b))
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	printSummary(tw, z, b)
	if *spans {
		printSpans(tw, z)
	}
	if *files {
		printFiles(tw, z)
	}
	return tw.Flush()
}

func printSummary(w io.Writer, z *ztoc.Ztoc, b []byte) {
	spanSize := int64(0)
	switch {
	case z.Gzip != nil:
		spanSize = z.Gzip.SpanSize
	case z.Tar != nil:
		spanSize = z.Tar.SpanSize
	}
	fmt.Fprintf(w, "digest\t%s\n", digest.FromBytes(b))
	fmt.Fprintf(w, "size\t%d bytes\n", len(b))
	fmt.Fprintf(w, "version\t%s\n", z.Version)
	fmt.Fprintf(w, "build tool\t%s\n", z.BuildToolIdentifier)
	fmt.Fprintf(w, "compression\t%s\n", z.CompressionAlgorithm)
	fmt.Fprintf(w, "layer size\t%d bytes\n", z.CompressedArchiveSize)
	fmt.Fprintf(w, "tar size\t%d bytes\n", z.UncompressedArchiveSize)
	fmt.Fprintf(w, "spans\t%d (span size %d)\n", z.NumSpans(), spanSize)
	fmt.Fprintf(w, "entries\t%d%s\n", len(z.TOC), typeCounts(z.TOC))
}

// typeCounts renders " (12 reg, 3 dir, ...)" for the entries' types.
func typeCounts(toc []ztoc.FileMetadata) string {
	counts := map[string]int{}
	for i := range toc {
		counts[toc[i].Type]++
	}
	if len(counts) == 0 {
		return ""
	}
	types := make([]string, 0, len(counts))
	for t := range counts {
		types = append(types, t)
	}
	sort.Slice(types, func(i, j int) bool {
		if counts[types[i]] != counts[types[j]] {
			return counts[types[i]] > counts[types[j]]
		}
		return types[i] < types[j]
	})
	parts := make([]string, len(types))
	for i, t := range types {
		parts[i] = fmt.Sprintf("%d %s", counts[t], t)
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func printSpans(w io.Writer, z *ztoc.Ztoc) {
	fmt.Fprintf(w, "\nSPAN\tCOMPRESSED\tUNCOMPRESSED\tBITS\tDIGEST\n")
	for i := range z.NumSpans() {
		s, err := z.Span(ztoc.SpanID(i))
		if err != nil {
			fmt.Fprintf(w, "%d\t%v\n", i, err)
			continue
		}
		bits := "-"
		if s.Checkpoint != nil {
			bits = fmt.Sprint(s.Checkpoint.Bits)
		}
		fmt.Fprintf(w, "%d\t[%d,%d)\t[%d,%d)\t%s\t%s\n", i, s.CompressedStart, s.CompressedEnd,
			s.UncompressedStart, s.UncompressedEnd, bits, s.Digest)
	}
}

func printFiles(w io.Writer, z *ztoc.Ztoc) {
	fmt.Fprintf(w, "\nTYPE\tMODE\tOWNER\tSIZE\tOFFSET\tNAME\n")
	for i := range z.TOC {
		m := &z.TOC[i]
		name := m.Name
		if m.Linkname != "" {
			name += " -> " + m.Linkname
		}
		fmt.Fprintf(w, "%s\t%#o\t%d:%d\t%d\t%d\t%s\n", m.Type, m.Mode, m.UID, m.GID,
			m.UncompressedSize, m.UncompressedOffset, name)
	}
}
