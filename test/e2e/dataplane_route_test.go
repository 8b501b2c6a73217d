//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/node-doctor/node-doctor/test/harness"
)

// TestDataplaneRoute runs pod-cidr-route against the harness node's real
// bridge network: the node's spec.podCIDR is the bridge's host-local range
// on cni0. It deletes, then misroutes, the cni0 route for that range (only
// that route; restored from what was there, in t.Cleanup too) and asserts
// each finding and that it clears.
func TestDataplaneRoute(t *testing.T) {
	harness.RequireRoot(t)
	bin := buildAgent(t)
	c := harness.StartT(t, harness.Options{ProxyMode: "iptables"})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	// The harness runs no node IPAM; spec.podCIDR is set once, as the
	// controller-manager's --allocate-node-cidrs would.
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"podCIDR": c.PodCIDR, "podCIDRs": []string{c.PodCIDR}}})
	if _, err := c.Client.CoreV1().Nodes().Patch(ctx, c.NodeName, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("set spec.podCIDR: %v", err)
	}
	cfg := filepath.Join(t.TempDir(), "node-doctor.yaml")
	if err := os.WriteFile(cfg, []byte("checks: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := dpAgent{bin: bin, kubeconfig: c.Kubeconfig, node: c.NodeName, config: cfg, only: "pod-cidr-route"}

	// A pod makes the bridge plugin create cni0, its gateway and its route.
	ns, err := c.CreateNamespace(ctx, "route")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreatePod(ctx, harness.PodOptions{Namespace: ns, Name: "p", Command: []string{"/bin/sh", "-c", "exec sleep 3600"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitForPod(ctx, ns, "p", 2*time.Minute, func(p *corev1.Pod) (bool, error) { return p.Status.PodIP != "", nil }); err != nil {
		t.Fatal(err)
	}

	cidr := netip.MustParsePrefix(c.PodCIDR).Masked().String()
	// "linkdown" is a state, not something `ip route replace` takes.
	orig := strings.TrimSpace(strings.ReplaceAll(run(t, "ip", "-4", "route", "show", "exact", cidr), " linkdown", ""))
	if !strings.Contains(orig, "dev "+harness.BridgeName) {
		t.Fatalf("no %s route for %s: %q", harness.BridgeName, cidr, orig)
	}
	t.Logf("route: %s", orig)
	restore := func() {
		_, _ = exec.Command("ip", "route", "del", cidr).CombinedOutput()
		if out, err := exec.Command("sh", "-c", "ip route replace "+orig).CombinedOutput(); err != nil {
			t.Errorf("restore route %q: %v: %s", orig, err, out)
		}
	}
	t.Cleanup(restore)

	f := a.waitFor(ctx, t, "pod-cidr-route", "PodCIDRRouteOK", true)
	if !strings.Contains(f.Message, harness.BridgeName) {
		t.Errorf("ok finding does not name %s: %+v", harness.BridgeName, f)
	}

	run(t, "ip", "route", "del", cidr, "dev", harness.BridgeName)
	f = a.waitFor(ctx, t, "pod-cidr-route", "PodCIDRRouteMissing", true)
	if f.Severity != "problem" || !strings.Contains(f.Message, cidr) || !strings.Contains(f.Message, "ip route replace "+cidr+" dev "+harness.BridgeName) {
		t.Errorf("missing route finding: %+v", f)
	}
	restore()
	a.waitFor(ctx, t, "pod-cidr-route", "PodCIDRRouteOK", true)

	// Replaced by a route to loopback (a wrong device that sends nothing
	// off the machine).
	run(t, "ip", "route", "replace", cidr, "dev", "lo")
	f = a.waitFor(ctx, t, "pod-cidr-route", "PodCIDRRouteWrongDevice", true)
	if f.Severity != "problem" || !strings.Contains(f.Message, "loopback") {
		t.Errorf("wrong device finding: %+v", f)
	}
	restore()
	a.waitFor(ctx, t, "pod-cidr-route", "PodCIDRRouteOK", true)
}
