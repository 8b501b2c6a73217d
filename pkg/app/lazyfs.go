package app

import "io/fs"

// lazyFS lets checks be built before the host root is known.
type lazyFS struct{ fs.FS }

// Open opens name in the host filesystem.
func (l *lazyFS) Open(name string) (fs.File, error) { return l.FS.Open(name) }
