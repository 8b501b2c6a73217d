package checks

import (
	"testing"
	"testing/fstest"

	"github.com/node-doctor/node-doctor/pkg/config"
	"github.com/node-doctor/node-doctor/pkg/netcheck"
)

func TestDefinitionsAreComplete(t *testing.T) {
	defs := All(Deps{HostFS: fstest.MapFS{}, Bridges: netcheck.NetlinkBridges{NS: -1}})
	seen := map[string]bool{}
	for _, d := range defs {
		if d.Name == "" || d.Area == "" || d.Description == "" || d.Check == nil {
			t.Errorf("%q: name, area, description and check are required", d.Name)
		}
		if seen[d.Name] {
			t.Errorf("%q registered twice", d.Name)
		}
		seen[d.Name] = true
		if d.Interval < config.MinInterval || d.Timeout <= 0 || d.Timeout > d.Interval {
			t.Errorf("%s: default interval %s / timeout %s out of range", d.Name, d.Interval, d.Timeout)
		}
	}
}

// The example config in the docs must load against the real checks.
func TestExampleConfigLoads(t *testing.T) {
	defs := All(Deps{HostFS: fstest.MapFS{}, Bridges: netcheck.NetlinkBridges{NS: -1}})
	c, err := config.LoadFile("../../docs/examples/config.yaml", defs)
	if err != nil {
		t.Fatal(err)
	}
	if c.HostRoot != "/host" || !c.Disabled["bridge-netfilter"] {
		t.Fatalf("example not applied: %+v", c)
	}
}
