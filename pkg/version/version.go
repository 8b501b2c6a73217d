// Package version carries build information set at link time.
package version

import "runtime/debug"

// Set with -ldflags "-X github.com/node-doctor/node-doctor/pkg/version.Version=...".
var (
	Version  = ""
	Revision = ""
)

// Get returns the version and revision, falling back to what the Go
// toolchain recorded in the binary.
func Get() (version, revision string) {
	version, revision = Version, Revision
	if bi, ok := debug.ReadBuildInfo(); ok {
		if version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && revision == "" {
				revision = s.Value
			}
		}
	}
	if version == "" {
		version = "dev"
	}
	if revision == "" {
		revision = "unknown"
	}
	return version, revision
}
