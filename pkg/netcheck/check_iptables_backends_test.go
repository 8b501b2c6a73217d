package netcheck

import (
	"github.com/node-doctor/node-doctor/pkg/dataplane"

	"github.com/node-doctor/node-doctor/pkg/kubeproxy"

	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// failingLegacy serves the nft backend and fails every legacy read with err.
type failingLegacy struct {
	fakeSaver
	err error
}

func (f failingLegacy) Save(ctx context.Context, backend string, v6 bool, table string, into *dataplane.IPTables) error {
	if backend == dataplane.BackendLegacy {
		return f.err
	}
	return f.fakeSaver.Save(ctx, backend, v6, table, into)
}

func TestIPTablesBackendsLegacyUnreadable(t *testing.T) {
	nft := fakeSaver{"nft/nat": string(readKP(t, "iptables-nft-nat.txt"))}
	d := kubeproxy.KubeProxyDeps{Services: fakeLister{}}

	d.IPTables = failingLegacy{nft, &exec.Error{Name: "iptables-legacy-save", Err: exec.ErrNotFound}}
	if f, err := runDef(t, IPTablesBackends(d)); err != nil || f[0].Reason != "SingleIPTablesBackend" {
		t.Fatalf("legacy tools missing: want the nft backend alone, got %v %+v", err, f)
	}

	d.IPTables = failingLegacy{nft, fmt.Errorf("iptables-legacy-save -t nat: exit status 3: Permission denied (you must be root)")}
	_, err := runDef(t, IPTablesBackends(d))
	if err == nil || !strings.Contains(err.Error(), "legacy iptables backend") || !strings.Contains(err.Error(), "Permission denied") {
		t.Fatalf("an unreadable legacy backend must make the check fail to run, got %v", err)
	}
}
