// Package checks is the one place where node-doctor's checks are registered
// and given their dependencies.
package checks

import (
	"io/fs"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/netcheck"
)

// Deps are the outside systems checks read from.
type Deps struct {
	HostFS  fs.FS
	Bridges netcheck.BridgeLister
}

// All returns every check, in report order.
func All(d Deps) []*check.Definition {
	defs := []check.Definition{
		netcheck.IPForward(d.HostFS, d.Bridges),
		netcheck.BridgeNetfilter(d.HostFS, d.Bridges),
		netcheck.Hairpin(d.Bridges),
	}
	out := make([]*check.Definition, len(defs))
	for i := range defs {
		out[i] = &defs[i]
	}
	return out
}
