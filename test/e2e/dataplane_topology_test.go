//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/node-doctor/node-doctor/pkg/kubeproxy"
	"github.com/node-doctor/node-doctor/test/harness"
)

// TestDataplaneTopology gives the harness node a zone and a selector-less
// Service with trafficDistribution and an EndpointSlice hinted for two
// zones, asserts real kube-proxy programs only this zone's endpoints and
// node-doctor verifies that clean, then breaks it both ways: a zone
// endpoint's rule removed (EndpointMissing) and a DNAT to the other zone's
// endpoint added (StaleEndpoint), and restores.
func TestDataplaneTopology(t *testing.T) {
	harness.RequireRoot(t)
	bin := buildAgent(t)
	for _, mode := range []string{"iptables", "nftables"} {
		t.Run(mode, func(t *testing.T) { topology(t, mode, bin) })
	}
}

const topoZone = "zone-a"

func topology(t *testing.T, mode, bin string) {
	c := harness.StartT(t, harness.Options{ProxyMode: mode})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cfg := filepath.Join(t.TempDir(), "node-doctor.yaml")
	if err := os.WriteFile(cfg, []byte("checks: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := dpAgent{bin: bin, kubeconfig: c.Kubeconfig, node: c.NodeName, config: cfg, only: "kube-proxy-rules"}

	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{corev1.LabelTopologyZone: topoZone}}})
	if _, err := c.Client.CoreV1().Nodes().Patch(ctx, c.NodeName, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("label node: %v", err)
	}
	ns, err := c.CreateNamespace(ctx, "topology")
	if err != nil {
		t.Fatal(err)
	}
	dist := corev1.ServiceTrafficDistributionPreferSameZone
	svcObj, err := c.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Ports:               []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
			TrafficDistribution: &dist,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Addresses inside the pod range that no pod holds: kube-proxy programs
	// them all the same, and the test sends no traffic.
	eps := map[string]string{"10.244.0.201": topoZone, "10.244.0.202": "zone-b", "10.244.0.203": topoZone}
	name, port, proto, ready := "http", int32(8080), corev1.ProtocolTCP, true
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "web-topology", Labels: map[string]string{
			discoveryv1.LabelServiceName: "web", discoveryv1.LabelManagedBy: "node-doctor-e2e"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
	for _, ip := range []string{"10.244.0.201", "10.244.0.202", "10.244.0.203"} {
		zone := eps[ip]
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{ip}, Zone: &zone, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			Hints: &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: zone}}},
		})
	}
	if _, err := c.Client.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	clusterIP := svcObj.Spec.ClusterIP
	zoneIPs := []string{"10.244.0.201", "10.244.0.203"}
	var why string
	if err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		ok, w, err := c.ServiceProgrammed(ctx, ns, "web", "http", clusterIP, zoneIPs)
		why = w
		return ok && err == nil, nil
	}); err != nil {
		t.Fatalf("kube-proxy did not program only zone %s's endpoints of %s/web: %s", topoZone, ns, why)
	}
	t.Logf("kube-proxy (%s) programs %s/web:http to %v only, not 10.244.0.202 (zone-b)", mode, ns, zoneIPs)
	svc := kubeproxy.ServicePortName{Namespace: ns, Name: "web", Port: "http", Protocol: "tcp"}

	ok := a.waitFor(ctx, t, "kube-proxy-rules", "RulesMatchAPI", true)
	if ok.Details["mode"] != mode {
		t.Errorf("mode %q, want %q", ok.Details["mode"], mode)
	}

	t.Run("zone endpoint's rule removed", func(t *testing.T) {
		restore := topoSnapshot(t, mode)
		t.Cleanup(restore)
		if mode == "iptables" {
			svcChain := kubeproxy.IPTablesChainsFor(svc).SVC
			sep := kubeproxy.IPTablesEndpointChain(svc, "10.244.0.203:8080")
			deleteJump(t, svcChain, sep)
		} else {
			chain := kubeproxy.NFTablesChainsFor(svc).Service
			run(t, "nft", "flush", "chain", "ip", "kube-proxy", chain)
			run(t, "nft", "add", "rule", "ip", "kube-proxy", chain, "meta", "l4proto", "tcp", "dnat", "to", "10.244.0.201:8080")
		}
		f := a.waitFor(ctx, t, "kube-proxy-rules", "EndpointMissing", true)
		if !strings.Contains(f.Details["expected"], "10.244.0.203:8080") || !strings.Contains(f.Details["expected"], "PreferSameZone "+topoZone) {
			t.Errorf("finding does not name the zone's endpoint: %+v", f)
		}
		a.servicesSection(ctx, t, svc, "EndpointMissing", "10.244.0.203:8080")
		restore()
		a.waitFor(ctx, t, "kube-proxy-rules", "RulesMatchAPI", true)
	})
	t.Run("DNAT to the other zone's endpoint", func(t *testing.T) {
		restore := topoSnapshot(t, mode)
		t.Cleanup(restore)
		if mode == "iptables" {
			svcChain := kubeproxy.IPTablesChainsFor(svc).SVC
			// The chain kube-proxy would use for it, so only the DNAT is wrong.
			sep := kubeproxy.IPTablesEndpointChain(svc, "10.244.0.202:8080")
			run(t, "iptables-nft", "-t", "nat", "-N", sep)
			run(t, "iptables-nft", "-t", "nat", "-A", sep, "-p", "tcp", "-m", "comment", "--comment", svc.String(), "-j", "DNAT", "--to-destination", "10.244.0.202:8080")
			run(t, "iptables-nft", "-t", "nat", "-I", svcChain, "1", "-m", "statistic", "--mode", "random", "--probability", "0.33", "-j", sep)
		} else {
			chain := kubeproxy.NFTablesChainsFor(svc).Service
			run(t, "nft", "insert", "rule", "ip", "kube-proxy", chain, "meta", "l4proto", "tcp", "dnat", "to", "10.244.0.202:8080")
		}
		f := a.waitFor(ctx, t, "kube-proxy-rules", "StaleEndpoint", true)
		if !strings.Contains(f.Details["actual"], "10.244.0.202:8080") {
			t.Errorf("finding does not name the other zone's endpoint: %+v", f)
		}
		restore()
		a.waitFor(ctx, t, "kube-proxy-rules", "RulesMatchAPI", true)
	})
}

func topoSnapshot(t *testing.T, mode string) func() {
	if mode == "iptables" {
		return natSnapshot(t)
	}
	return nftSnapshot(t)
}

// deleteJump deletes the rule in chain that jumps to target.
func deleteJump(t *testing.T, chain, target string) {
	t.Helper()
	for _, l := range strings.Split(run(t, "iptables-nft-save", "-t", "nat"), "\n") {
		if strings.HasPrefix(l, "-A "+chain+" ") && strings.HasSuffix(l, "-j "+target) {
			run(t, "sh", "-c", "iptables-nft -t nat -D "+strings.TrimPrefix(l, "-A "))
			return
		}
	}
	t.Fatalf("no jump to %s in %s", target, chain)
}
