package kubeproxy

import (
	"strings"

	"context"

	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/node-doctor/node-doctor/pkg/dataplane"
)

// kpData holds what the harness's API and kube-proxy answered; the rule
// dumps they go with are the data-plane readers' fixtures.
var kpData = []string{"testdata/kubeproxy", "../dataplane/testdata/kubeproxy"}

func readKP(t testing.TB, name string) []byte {
	t.Helper()
	for _, dir := range kpData {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
			return b
		}
	}
	t.Fatalf("fixture %s not in %v", name, kpData)
	return nil
}

func loadIPT(t testing.TB, files ...string) *dataplane.IPTables {
	t.Helper()
	var all []byte
	for _, f := range files {
		all = append(all, readKP(t, f)...)
	}
	ipt, err := dataplane.ParseIPTablesSave(bytes.NewReader(all))
	if err != nil {
		t.Fatal(err)
	}
	return ipt
}

// fakeSaver serves iptables-save text per backend/table.
type fakeSaver map[string]string

func (f fakeSaver) Save(_ context.Context, backend string, v6 bool, table string, into *dataplane.IPTables) error {
	if v6 {
		return nil
	}
	return dataplane.ParseIPTablesSaveInto(strings.NewReader(f[backend+"/"+table]), into)
}

type fakeNFT map[string][]byte

func (f fakeNFT) ListTable(_ context.Context, family, table string, into *dataplane.NFTTable) (bool, error) {
	b, ok := f[family]
	if !ok {
		return false, nil
	}
	return true, dataplane.ParseNFTJSONInto(bytes.NewReader(b), into)
}

type fakeKP struct {
	mode          string
	nodePortAddrs []string
	sync          KubeProxySync
	h             KubeProxyHealthz
	err           error
}

func (f fakeKP) ProxyMode(context.Context) (string, error)           { return f.mode, f.err }
func (f fakeKP) Healthz(context.Context) (KubeProxyHealthz, error)   { return f.h, f.err }
func (f fakeKP) Sync(context.Context) (KubeProxySync, error)         { return f.sync, f.err }
func (f fakeKP) NodePortAddresses(context.Context) ([]string, error) { return f.nodePortAddrs, f.err }
