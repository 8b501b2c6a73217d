package harness

import (
	"os"
	"strings"
	"testing"
)

// The fixtures were captured from this harness's node (kube-proxy
// v1.37.2) with Service default/web (port "http") and two endpoints.
func TestServiceEndpointsFromRules(t *testing.T) {
	tests := map[string]struct {
		file      string
		parse     func(rules, ns, svc, port, ip string) ([]string, error)
		clusterIP string
	}{
		"iptables": {"testdata/iptables-save-nat.txt", iptablesServiceEndpoints, "10.96.114.162"},
		"nftables": {"testdata/nft-kube-proxy.txt", nftServiceEndpoints, "10.96.101.86"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tc.parse(string(b), "default", "web", "http", tc.clusterIP)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, ",") != "10.244.0.2,10.244.0.4" {
				t.Errorf("endpoints = %v, want [10.244.0.2 10.244.0.4]", got)
			}
			if _, err := tc.parse(string(b), "default", "web", "http", "10.96.9.9"); err == nil {
				t.Errorf("unknown ClusterIP: want an error")
			}
			if got, err := tc.parse(string(b), "default", "kubernetes", "https", "10.96.0.1"); err != nil || len(got) != 1 || got[0] != "198.51.100.10" {
				t.Errorf("kubernetes service: got %v, %v; want [198.51.100.10]", got, err)
			}
		})
	}
}

func TestGatewayAndServiceIP(t *testing.T) {
	if got := gatewayIP("10.244.0.0/24"); got != "10.244.0.1" {
		t.Errorf("gatewayIP = %s", got)
	}
	if got := serviceIP("10.96.0.0/16").String(); got != "10.96.0.1" {
		t.Errorf("serviceIP = %s", got)
	}
}

func TestBuildImageDeterministic(t *testing.T) {
	if _, err := os.Stat(busyboxPath); err != nil {
		t.Skipf("%s missing (package busybox-static): %v", busyboxPath, err)
	}
	spec := DefaultImages()[1]
	a, err := BuildImage(t.TempDir(), spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := BuildImage(t.TempDir(), spec)
	if err != nil {
		t.Fatal(err)
	}
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if string(ab) != string(bb) {
		t.Errorf("two builds of %s differ", spec.Ref)
	}
}
