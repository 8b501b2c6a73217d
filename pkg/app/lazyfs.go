package app

import "io/fs"

// lazyFS lets checks be built before the host root is known.
type lazyFS struct{ fs.FS }

// Open opens name in the host filesystem.
func (l *lazyFS) Open(name string) (fs.File, error) { return l.FS.Open(name) }

// ReadFile reads through the host filesystem's own ReadFile: fs.ReadFile on
// lazyFS would size its buffer from Stat, which is 0 for /proc files, and
// sysctl files answer a read at a non-zero offset with EOF ("1287" read as "1").
func (l *lazyFS) ReadFile(name string) ([]byte, error) { return fs.ReadFile(l.FS, name) }
