package kubeproxy

import (
	"strings"

	"context"

	discoveryv1 "k8s.io/api/discovery/v1"

	corev1 "k8s.io/api/core/v1"

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

type fakeLister struct {
	svcs []*corev1.Service
	eps  []*discoveryv1.EndpointSlice
	node *corev1.Node
	err  error
}

func (f fakeLister) Services() ([]*corev1.Service, error)                  { return f.svcs, f.err }
func (f fakeLister) EndpointSlices() ([]*discoveryv1.EndpointSlice, error) { return f.eps, f.err }
func (f fakeLister) Node() (*corev1.Node, error)                           { return f.node, f.err }
func (f fakeLister) NodeName() string                                      { return "node-doctor-e2e" }

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
