package netcheck

import (
	"encoding/json"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"os"
	"path/filepath"
	"testing"
)

// kpData holds what the harness's API and kube-proxy answered; the rule
// dumps they go with are the data-plane readers' fixtures.
var kpData = []string{"../kubeproxy/testdata/kubeproxy", "../dataplane/testdata/kubeproxy"}

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

// loadAPI reads `kubectl get svc,endpointslices -A -o json` as captured from
// the harness node.
func loadAPI(t testing.TB, name string) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	t.Helper()
	var list struct{ Items []json.RawMessage }
	if err := json.Unmarshal(readKP(t, name), &list); err != nil {
		t.Fatal(err)
	}
	var svcs []*corev1.Service
	var eps []*discoveryv1.EndpointSlice
	for _, raw := range list.Items {
		var k struct{ Kind string }
		_ = json.Unmarshal(raw, &k)
		switch k.Kind {
		case "Service":
			s := &corev1.Service{}
			if err := json.Unmarshal(raw, s); err != nil {
				t.Fatal(err)
			}
			svcs = append(svcs, s)
		case "EndpointSlice":
			s := &discoveryv1.EndpointSlice{}
			if err := json.Unmarshal(raw, s); err != nil {
				t.Fatal(err)
			}
			eps = append(eps, s)
		}
	}
	return svcs, eps
}
