package explain

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/cri"
	"github.com/node-doctor/node-doctor/pkg/kubeproxy"
)

func TestWriteServicePath(t *testing.T) {
	p := &kubeproxy.ServicePath{Service: "dp/web", Node: "n1", Mode: "iptables", Backend: "nft", Ports: []kubeproxy.PortPath{{
		Port: "dp/web:http", Protocol: "TCP", Family: "IPv4", ClusterIP: "10.96.0.5", ServicePort: 80, Endpoints: []string{"10.244.0.2:8080"},
		Hops: []kubeproxy.Hop{
			{Status: kubeproxy.HopOK, Where: "nat KUBE-SERVICES", Rule: "-A KUBE-SERVICES -d 10.96.0.5/32 -j KUBE-SVC-X"},
			{Status: kubeproxy.HopMissing, Where: "expected", Rule: "KUBE-SVC-X DNAT to 10.244.0.2:8080", Note: "a ready endpoint gets no traffic"},
		},
		Problems: []kubeproxy.PathProblem{{Reason: "EndpointMissing", Message: "a ready endpoint gets no traffic", Expected: "x", Actual: "y", Fix: "restart kube-proxy"}},
	}}}
	var b bytes.Buffer
	if err := WriteServicePath(&b, p, false); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"Service dp/web on node n1 (kube-proxy in iptables mode, iptables-nft backend)",
		"dp/web:http TCP 10.96.0.5:80 (IPv4)",
		"endpoints in the API: 10.244.0.2:8080",
		"ok       nat KUBE-SERVICES",
		"MISSING  expected           KUBE-SVC-X DNAT to 10.244.0.2:8080   # a ready endpoint gets no traffic",
		"PROBLEM EndpointMissing: a ready endpoint gets no traffic; expected x, found y\n    fix: restart kube-proxy",
		"dp/web: BROKEN on this node (1 problems)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Error("colour without color")
	}
}

func TestWritePod(t *testing.T) {
	at := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	p := &cri.PodExplanation{Pod: "ns/crash", Node: "n1", Endpoint: "unix:///run/containerd/containerd.sock", Sandboxes: []cri.SandboxExplanation{{
		ID: "0123456789abcdef", State: "READY", IP: "10.244.0.9", Created: at,
		DNS: &cri.DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{"ns.svc.cluster.local"}, Options: []string{"ndots:5"}},
		Containers: []cri.ContainerExplanation{{Name: "app", ID: "fedcba9876543210", State: "EXITED", Attempt: 2, ExitCode: 137, Reason: "OOMKilled", OOMKilled: true,
			Finished: at, LastLines: "allocating\nkilled\n"}},
	}}, Findings: []check.Finding{{Check: "cri-oom-killed", Severity: check.SeverityProblem, Reason: "OOMKilled", Message: "app was\nOOM killed"}}}
	var b bytes.Buffer
	if err := WritePod(&b, p, false); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"sandbox 0123456789abc  READY  attempt 0  created 2026-12-07T08:00:00Z  IP 10.244.0.9",
		"dns: nameserver 10.96.0.10; search ns.svc.cluster.local; options ndots:5",
		"app        fedcba9876543  EXITED  2        137   OOMKilled",
		"    | killed",
		"PROBLEM  cri-oom-killed  OOMKilled  app was OOM killed",
		"ns/crash: needs attention on this node",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
