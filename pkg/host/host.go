// Package host gives checks read-only access to the node: its filesystem
// (possibly mounted under a prefix such as /host when running in a pod) and
// its sysctls.
package host

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
)

// FS returns the node's filesystem rooted at root ("/" on the host, "/host"
// in a pod that mounts the host there). Paths given to it are relative, e.g.
// "proc/sys/net/ipv4/ip_forward".
func FS(root string) fs.FS { return os.DirFS(root) }

// SysctlPath maps a dotted sysctl name to its path under proc/sys.
func SysctlPath(name string) string {
	return path.Join("proc/sys", strings.ReplaceAll(name, ".", "/"))
}

// ReadSysctl reads a sysctl's value, trimmed of white space. A sysctl that
// does not exist gives an error satisfying errors.Is(err, fs.ErrNotExist).
func ReadSysctl(fsys fs.FS, name string) (string, error) {
	b, err := fs.ReadFile(fsys, SysctlPath(name))
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", name, err)
	}
	return string(bytes.TrimSpace(b)), nil
}

// Exists reports whether p exists in fsys; errors other than "does not exist"
// are returned.
func Exists(fsys fs.FS, p string) (bool, error) {
	_, err := fs.Stat(fsys, p)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("stat %s: %w", p, err)
}
