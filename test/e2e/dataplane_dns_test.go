//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/node-doctor/node-doctor/test/harness"
)

// TestDataplaneDNS breaks the Service and DNS path of the harness node (whose
// Node has no spec.podCIDRs: the controller-manager runs without node IPAM)
// and asserts each break is found and clears: FORWARD policy DROP found from
// the CNI config and from the pods' IPs alone, and the kubelet's clusterDNS
// at a Service without endpoints, at an IP no Service has, and a loopback
// resolvConf, and the DNS Service's ClusterIP rules deleted from this node's
// nat table. The kubelet config file is edited in place and restored; the
// kubelet is not restarted (the check reads what its config file says).
// Unchanged, the harness kubelet sets no clusterDNS: not applicable.
func TestDataplaneDNS(t *testing.T) {
	harness.RequireRoot(t)
	bin := buildAgent(t)
	c := harness.StartT(t, harness.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if n, err := c.Client.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{}); err != nil || len(n.Spec.PodCIDRs) != 0 {
		t.Fatalf("the harness Node must have no spec.podCIDRs: %v %v", n.Spec.PodCIDRs, err)
	}
	ns, err := c.CreateNamespace(ctx, "dns")
	if err != nil {
		t.Fatal(err)
	}
	web, err := c.CreateServiceWithEndpoints(ctx, ns, "dns", 1)
	if err != nil {
		t.Fatal(err)
	}
	podIP := web.Pods[0].Status.PodIP
	empty, err := c.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "no-endpoints"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "nothing"},
			Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt(53)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	agent := func(t *testing.T, cfg string) dpAgent {
		p := filepath.Join(t.TempDir(), "node-doctor.yaml")
		if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		return dpAgent{bin: bin, kubeconfig: c.Kubeconfig, node: c.NodeName, config: p, only: "forward-policy,cluster-dns",
			args: []string{"--runtime-endpoint", c.CRIEndpoint}}
	}

	t.Run("FORWARD policy DROP without spec.podCIDR", func(t *testing.T) {
		policy := "ACCEPT"
		if m := policyRe.FindStringSubmatch(run(t, "iptables-nft-save", "-t", "filter")); m != nil {
			policy = m[1]
		}
		t.Cleanup(func() { _, _ = exec.Command("iptables-nft", "-P", "FORWARD", policy).CombinedOutput() })
		for _, tc := range []struct{ sources, want string }{
			{"", "kube-proxy's clusterCIDR"},
			{"cni", "the CNI config " + filepath.Join(c.WorkDir, "containerd")},
			{"pods", "the IP of pod " + ns + "/" + web.Pods[0].Name},
		} {
			cfg := ""
			if tc.sources != "" {
				cfg = fmt.Sprintf("checks:\n  forward-policy:\n    rangeSources: [%s]\n", tc.sources)
			}
			a := agent(t, cfg)
			ok := a.waitFor(ctx, t, "forward-policy", "ForwardAccepts", true)
			if !strings.Contains(ok.Message, tc.want) {
				t.Errorf("sources %q: healthy message %q does not name %q", tc.sources, ok.Message, tc.want)
			}
			start := time.Now()
			run(t, "iptables-nft", "-P", "FORWARD", "DROP")
			f := a.waitFor(ctx, t, "forward-policy", "ForwardDropsPodTraffic", true)
			t.Logf("sources %q: found in %s", tc.sources, time.Since(start).Round(time.Millisecond))
			if !strings.Contains(f.Details["pod_ranges"], tc.want) {
				t.Errorf("sources %q: pod_ranges %q does not name %q", tc.sources, f.Details["pod_ranges"], tc.want)
			}
			if tc.sources == "pods" && f.Details["pod_cidr"] != podIP+"/32" {
				t.Errorf("pod source: pod_cidr %q, want %s/32", f.Details["pod_cidr"], podIP)
			}
			run(t, "iptables-nft", "-P", "FORWARD", policy)
			a.waitFor(ctx, t, "forward-policy", "ForwardDropsPodTraffic", false)
		}
	})

	t.Run("kubelet DNS", func(t *testing.T) {
		kcfg := filepath.Join(c.WorkDir, "kubelet.json")
		orig, err := os.ReadFile(kcfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.WriteFile(kcfg, orig, 0o644) })
		set := func(t *testing.T, kv map[string]any) {
			var m map[string]any
			if err := json.Unmarshal(orig, &m); err != nil {
				t.Fatal(err)
			}
			for k, v := range kv {
				m[k] = v
			}
			b, _ := json.MarshalIndent(m, "", "  ")
			if err := os.WriteFile(kcfg, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		stub := filepath.Join(t.TempDir(), "resolv.conf")
		if err := os.WriteFile(stub, []byte("nameserver 127.0.0.53\noptions edns0 trust-ad\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		svcCIDR := netip.MustParsePrefix(c.ServiceCIDR)
		b := svcCIDR.Addr().As4()
		b[3] = 250
		nobody := netip.AddrFrom4(b).String()
		a := agent(t, "")
		// The harness kubelet sets no clusterDNS: pods get the node's
		// nameservers, nothing to report.
		for _, r := range a.run(ctx, t).Results {
			if r.Check == "cluster-dns" && (r.NotApplicable == "" || len(r.Findings) > 0) {
				t.Errorf("harness kubelet without clusterDNS: want not applicable, got %s %+v", r.Status, r.Findings)
			}
		}
		good := map[string]any{"clusterDNS": []string{web.Service.Spec.ClusterIP}, "clusterDomain": "cluster.local"}
		set(t, good)
		a.waitFor(ctx, t, "cluster-dns", "ClusterDNSServed", true)
		for _, tc := range []struct {
			name, reason, want string
			kv                 map[string]any
		}{
			{"Service without endpoints", "ClusterDNSNoEndpoints", ns + "/no-endpoints", map[string]any{"clusterDNS": []string{empty.Spec.ClusterIP}}},
			{"IP no Service has", "ClusterDNSNoService", "clusterDNS in " + kcfg, map[string]any{"clusterDNS": []string{nobody}}},
			{"loopback resolvConf", "ResolvConfLoopback", "resolvConf: /run/systemd/resolve/resolv.conf", map[string]any{"resolvConf": stub}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				start := time.Now()
				set(t, tc.kv)
				f := a.waitFor(ctx, t, "cluster-dns", tc.reason, true)
				t.Logf("found in %s", time.Since(start).Round(time.Millisecond))
				if !strings.Contains(f.Message, tc.want) {
					t.Errorf("message %q does not say %q", f.Message, tc.want)
				}
				set(t, good)
				a.waitFor(ctx, t, "cluster-dns", tc.reason, false)
				a.waitFor(ctx, t, "cluster-dns", "ClusterDNSServed", true)
			})
		}
		t.Run("the DNS Service's ClusterIP not programmed on this node", func(t *testing.T) {
			restore := natSnapshot(t)
			t.Cleanup(restore)
			ip := web.Service.Spec.ClusterIP
			n := 0
			for _, l := range strings.Split(run(t, "iptables-nft-save", "-t", "nat"), "\n") {
				if strings.HasPrefix(l, "-A KUBE-SERVICES -d "+ip+"/32 ") {
					run(t, "sh", "-c", "iptables-nft -t nat -D "+strings.TrimPrefix(l, "-A "))
					n++
				}
			}
			if n == 0 {
				t.Fatalf("no KUBE-SERVICES rule for %s", ip)
			}
			start := time.Now()
			f := a.waitFor(ctx, t, "cluster-dns", "ClusterDNSRulesBroken", true)
			t.Logf("found in %s", time.Since(start).Round(time.Millisecond))
			if !strings.Contains(f.Message, ns+"/dns") || !strings.Contains(f.Message, "ServicePortNotProgrammed") {
				t.Errorf("message %q does not name %s/dns and ServicePortNotProgrammed", f.Message, ns)
			}
			restore()
			a.waitFor(ctx, t, "cluster-dns", "ClusterDNSRulesBroken", false)
			ok := a.waitFor(ctx, t, "cluster-dns", "ClusterDNSServed", true)
			if !strings.Contains(ok.Message, "iptables rules on this node verified") {
				t.Errorf("healthy message %q does not say the rules were verified", ok.Message)
			}
		})
	})
}
