package kernel

import (
	"io/fs"
	"path"
	"strings"
	"time"
)

// HostLocation is the node's time zone from etc/localtime under the host
// root, in which syslog files write their timestamps. The agent's own
// zone is the fallback: the image carries no zone data, so that is UTC.
func HostLocation(fsys fs.FS) *time.Location {
	name, file := "Local", "etc/localtime"
	// Usually a symlink into the zoneinfo tree, absolute on the node: follow
	// it under the host root, not in the agent's own filesystem.
	if target, err := fs.ReadLink(fsys, file); err == nil {
		if !path.IsAbs(target) {
			target = path.Join("/etc", target)
		}
		file = strings.TrimPrefix(path.Clean(target), "/")
		if _, zone, ok := strings.Cut(file, "zoneinfo/"); ok {
			name = zone
		}
	}
	b, err := fs.ReadFile(fsys, file)
	if err != nil {
		return time.Local
	}
	loc, err := time.LoadLocationFromTZData(name, b)
	if err != nil {
		return time.Local
	}
	return loc
}
