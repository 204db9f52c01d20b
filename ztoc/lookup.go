package ztoc

import (
	"errors"
	"fmt"
	"path"
)

// ErrNotRegular is wrapped by FileEntry errors for entries without file
// data (symlinks, directories, devices).
var ErrNotRegular = errors.New("not a regular file")

// CleanName returns the path a TOC name stands for in the layer's tree:
// cleaned, relative, without a trailing slash ("" is the root).
func CleanName(name string) string {
	return path.Clean("/" + name)[1:]
}

// FileEntry returns the entry holding the data of the regular file called
// name (cleaned as CleanName does), following hardlinks to the file they
// name. When the TOC lists a name more than once the last entry wins, as
// it does on extraction.
func (z *Ztoc) FileEntry(name string) (*FileMetadata, error) {
	names := make(map[string]int, len(z.TOC))
	for i := range z.TOC {
		names[CleanName(z.TOC[i].Name)] = i
	}
	orig := name
	for hops := 0; ; hops++ {
		i, ok := names[CleanName(name)]
		if !ok {
			if hops > 0 {
				return nil, fmt.Errorf("%s: hardlink target %s is not in the layer", orig, name)
			}
			return nil, fmt.Errorf("%s is not in the layer", name)
		}
		m := &z.TOC[i]
		switch {
		case m.Type == TypeReg:
			return m, nil
		case m.Type == TypeHardlink && hops < len(z.TOC):
			name = m.Linkname
		case m.Type == TypeSymlink:
			return nil, fmt.Errorf("%s is a symlink to %s: %w", name, m.Linkname, ErrNotRegular)
		default:
			return nil, fmt.Errorf("%s is a %s: %w", name, m.Type, ErrNotRegular)
		}
	}
}
