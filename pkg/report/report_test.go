package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/node-doctor/node-doctor/pkg/check"
)

func sample() Report {
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	return New("node-1", "v0.1.0", at, []check.Result{
		{Check: "ip-forward", Area: "network", Status: check.StatusOK, Start: at, Findings: []check.Finding{
			{Check: "ip-forward", Severity: check.SeverityOK, Reason: "IPForwardEnabled", Message: "net.ipv4.ip_forward is 1"},
		}},
		{Check: "hairpin", Area: "network", Status: check.StatusProblem, Start: at, Findings: []check.Finding{
			{Check: "hairpin", Severity: check.SeverityOK, Reason: "HairpinEnabled", Message: "bridge cbr0: fine"},
			{Check: "hairpin", Severity: check.SeverityProblem, Reason: "HairpinModeOff", Message: "bridge cni0: off\non vethb", Details: map[string]string{"ports": "vethb"}},
		}},
		{Check: "bridge-netfilter", Area: "network", Status: check.StatusNotApplicable, NotApplicable: "no bridge"},
		{Check: "crash-loop", Area: "runtime", Status: check.StatusWarning, Findings: []check.Finding{
			{Severity: check.SeverityWarning, Reason: "CrashLoop", Message: "exit 1", LogExcerpt: `last log line: "boom"`, Object: check.Object{Kind: check.KindPod, Namespace: "default", Name: "web", Container: "app"}},
		}},
		{Check: "runtime", Area: "runtime", Status: check.StatusError, Err: errors.New("dial unix /run/containerd/containerd.sock: connect: permission denied")},
	})
}

func TestSummaryAndHealth(t *testing.T) {
	r := sample()
	want := Summary{OK: 1, Warning: 1, Problem: 1, Error: 1, NotApplicable: 1}
	if r.Summary != want {
		t.Fatalf("summary %+v, want %+v", r.Summary, want)
	}
	if r.Healthy() {
		t.Fatal("a report with a problem and an error is not healthy")
	}
	ok := New("n", "v", time.Now(), []check.Result{{Status: check.StatusOK}, {Status: check.StatusWarning}, {Status: check.StatusNotApplicable}})
	if !ok.Healthy() {
		t.Fatal("ok, warning and not-applicable are healthy")
	}
}

func TestTable(t *testing.T) {
	var b bytes.Buffer
	if err := WriteTable(&b, sample(), TableOptions{}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"node-doctor v0.1.0 report for node node-1 at 2026-11-23T12:00:00Z",
		"NETWORK\n  STATUS   CHECK",
		"  OK       ip-forward        IPForwardEnabled  net.ipv4.ip_forward is 1\n",
		"  PROBLEM  hairpin           HairpinModeOff    bridge cni0: off on vethb\n",
		"  N/A      bridge-netfilter  -                 no bridge\n",
		"RUNTIME",
		`Pod default/web container app: exit 1; last log line: "boom"`,
		"could not run: dial unix",
		"5 checks: 1 ok, 1 warning, 1 problem, 1 error, 1 not applicable",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "HairpinEnabled") {
		t.Error("healthy finding of a failing check shown without --verbose")
	}
	if strings.Contains(out, "\x1b[") {
		t.Error("colour without Color")
	}
	b.Reset()
	_ = WriteTable(&b, sample(), TableOptions{Verbose: true, Color: true})
	if out := b.String(); !strings.Contains(out, "HairpinEnabled") || !strings.Contains(out, `{"ports":"vethb"}`) || !strings.Contains(out, "\x1b[31mPROBLEM\x1b[0m") {
		t.Errorf("verbose colour table:\n%s", out)
	}
}

func TestJSONAndYAML(t *testing.T) {
	var b bytes.Buffer
	if err := WriteJSON(&b, sample()); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Node    string
		Summary map[string]int
		Results []struct {
			Check, Status, Error string
			NotApplicable        string `json:"not_applicable_reason"`
			Findings             []map[string]any
		}
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Node != "node-1" || got.Summary["not_applicable"] != 1 || len(got.Results) != 5 {
		t.Fatalf("json: %+v", got)
	}
	if got.Results[1].Status != "problem" || got.Results[1].Findings[1]["severity"] != "problem" || got.Results[1].Findings[1]["reason"] != "HairpinModeOff" {
		t.Errorf("json finding: %+v", got.Results[1])
	}
	if got.Results[4].Error == "" || got.Results[2].NotApplicable != "no bridge" {
		t.Errorf("json error / not-applicable: %+v %+v", got.Results[4], got.Results[2])
	}
	if got.Results[2].Findings == nil {
		t.Error("findings must be [] not null")
	}

	b.Reset()
	if err := WriteYAML(&b, sample()); err != nil {
		t.Fatal(err)
	}
	var y map[string]any
	if err := yaml.Unmarshal(b.Bytes(), &y); err != nil {
		t.Fatal(err)
	}
	res := y["results"].([]any)[1].(map[string]any)
	if res["status"] != "problem" || res["findings"].([]any)[1].(map[string]any)["severity"] != "problem" {
		t.Errorf("yaml: %v", res)
	}
}

func TestHealthyObjectsFoldedUnlessVerbose(t *testing.T) {
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	r := New("n", "v", at, []check.Result{{Check: "cri-inventory", Area: "runtime", Status: check.StatusOK, Findings: []check.Finding{
		{Severity: check.SeverityOK, Reason: "PodSandbox", Message: "sandbox READY", Object: check.Object{Kind: check.KindPod, Namespace: "a", Name: "web"}},
		{Severity: check.SeverityOK, Reason: "Container", Message: "container running", Object: check.Object{Kind: check.KindPod, Namespace: "a", Name: "web", Container: "app"}},
	}}})
	var b bytes.Buffer
	_ = WriteTable(&b, r, TableOptions{})
	if out := b.String(); strings.Contains(out, "container running") || !strings.Contains(out, "2 pods and containers listed; --verbose shows them") {
		t.Errorf("folded:\n%s", out)
	}
	b.Reset()
	_ = WriteTable(&b, r, TableOptions{Verbose: true})
	if out := b.String(); !strings.Contains(out, "Pod a/web container app: container running") {
		t.Errorf("verbose:\n%s", out)
	}
}

func servicesResults() []check.Result {
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	return []check.Result{
		{Check: "kube-proxy-rules", Area: "network", Status: check.StatusProblem, Start: at, Findings: []check.Finding{
			{Severity: check.SeverityProblem, Reason: "EndpointMissing", Message: "dp/web:http (TCP, IPv4, iptables): long message",
				Object: check.Object{Kind: check.KindService, Namespace: "dp", Name: "web"},
				Details: map[string]string{"service_port": "dp/web:http", "protocol": "TCP", "ip_family": "IPv4", "mode": "iptables",
					"expected": "KUBE-SVC-IFGUBRKS5UGRVAEJ DNAT to 10.244.0.3:8080", "actual": "no DNAT to 10.244.0.3:8080 (has: 10.244.0.2:8080)",
					"why": "a ready endpoint gets no traffic from this node", "fix": "restart kube-proxy"}},
			{Severity: check.SeverityOK, Reason: "ServicePortsVerified", Message: "3 verified, 1 broken",
				Details: map[string]string{"mode": "iptables", "service_ports_verified": "3", "service_ports_broken": "1", "service_ports_pending": "2", "service_ports_no_endpoints": "1"}},
		}},
		// A warning about a pod is not a service port.
		{Check: "crash-loop", Area: "runtime", Status: check.StatusWarning, Findings: []check.Finding{
			{Severity: check.SeverityWarning, Reason: "CrashLoop", Object: check.Object{Kind: check.KindPod, Namespace: "dp", Name: "web-0"}},
		}},
	}
}

func TestServicesSection(t *testing.T) {
	s := ServicesSection(servicesResults(), "kube-proxy-rules")
	if s == nil || s.Note != "" {
		t.Fatalf("section %+v", s)
	}
	if want := (ServiceCounts{Check: "kube-proxy-rules", Mode: "iptables", Verified: 3, Broken: 1, Pending: 2, NoEndpoints: 1}); len(s.Counts) != 1 || s.Counts[0] != want {
		t.Errorf("counts %+v", s.Counts)
	}
	if len(s.Broken) != 1 || s.Broken[0].ServicePort != "dp/web:http" || s.Broken[0].Reason != "EndpointMissing" || s.Broken[0].Fix != "restart kube-proxy" {
		t.Errorf("broken %+v", s.Broken)
	}

	rep := New("node-1", "v0.1.0", time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC), servicesResults())
	rep.Services = s
	var b bytes.Buffer
	if err := WriteTable(&b, rep, TableOptions{}); err != nil {
		t.Fatal(err)
	}
	want := `
SERVICES
  iptables: 3 service ports verified, 1 broken, 2 pending (kube-proxy still syncing), 1 with no endpoints anywhere
  PROBLEM dp/web:http (TCP, IPv4, iptables) EndpointMissing: a ready endpoint gets no traffic from this node
      expected: KUBE-SVC-IFGUBRKS5UGRVAEJ DNAT to 10.244.0.3:8080
      actual:   no DNAT to 10.244.0.3:8080 (has: 10.244.0.2:8080)
      fix:      restart kube-proxy

2 checks:`
	if !strings.Contains(b.String(), want) {
		t.Errorf("table lacks the services section:\n%s", b.String())
	}

	b.Reset()
	if err := WriteJSON(&b, rep); err != nil {
		t.Fatal(err)
	}
	var back struct{ Services *Services }
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || back.Services == nil || back.Services.Broken[0].Expected != s.Broken[0].Expected {
		t.Errorf("json round trip: %v %+v", err, back.Services)
	}
	b.Reset()
	if err := WriteYAML(&b, rep); err != nil || !strings.Contains(b.String(), "service_port: dp/web:http") {
		t.Errorf("yaml: %v\n%s", err, b.String())
	}
}

func TestServicesSectionAbsentOrWhy(t *testing.T) {
	if s := ServicesSection(sample().Results, "kube-proxy-rules"); s != nil {
		t.Errorf("no data-plane check ran, want no section: %+v", s)
	}
	na := []check.Result{{Check: "kube-proxy-rules", Status: check.StatusNotApplicable, NotApplicable: "no cluster access"}}
	s := ServicesSection(na, "kube-proxy-rules")
	if s == nil || s.Note != "not verified (kube-proxy-rules): no cluster access" {
		t.Fatalf("section %+v", s)
	}
	var b bytes.Buffer
	rep := New("n", "v", time.Now(), na)
	rep.Services = s
	if err := WriteTable(&b, rep, TableOptions{}); err != nil || !strings.Contains(b.String(), "\nSERVICES\n  not verified (kube-proxy-rules): no cluster access\n") {
		t.Errorf("%v\n%s", err, b.String())
	}
	b.Reset()
	if err := WriteJSON(&b, New("n", "v", time.Now(), nil)); err != nil || strings.Contains(b.String(), "services") {
		t.Errorf("a report without the section must not have the key: %s", b.String())
	}
	errRes := []check.Result{{Check: "kube-proxy-rules", Status: check.StatusError, Err: errors.New("nft: exit 1\nboom")}}
	if s := ServicesSection(errRes, "kube-proxy-rules"); s == nil || s.Note != "not verified (kube-proxy-rules could not run): nft: exit 1 boom" {
		t.Errorf("error: %+v", s)
	}
}

func TestTableCollapsesAreaThatDoesNotApply(t *testing.T) {
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	noRuntime := "no container runtime on this machine (no socket at unix:///run/containerd/containerd.sock)"
	na := func(name, area, reason string) check.Result {
		return check.Result{Check: name, Area: area, Status: check.StatusNotApplicable, NotApplicable: reason}
	}
	r := New("node-1", "v0.1.0", at, []check.Result{
		{Check: "ip-forward", Area: "network", Status: check.StatusOK, Findings: []check.Finding{
			{Severity: check.SeverityOK, Reason: "IPForwardEnabled", Message: "net.ipv4.ip_forward is 1"},
		}},
		// Not every check of the area: one row each.
		na("bridge-netfilter", "network", "no bridge"),
		na("hairpin", "network", "no bridge"),
		// Every check, one reason: one row.
		na("cri-runtime", "runtime", noRuntime),
		na("cri-crash-loop", "runtime", noRuntime),
		na("cri-inventory", "runtime", noRuntime),
		// Every check, two reasons: one row each.
		na("kube-proxy-rules", "dataplane", "no cluster access"),
		na("kube-proxy-health", "dataplane", "kube-proxy is not running"),
		// A lone check keeps its name.
		na("kernel-log", "kernel", "no log source"),
	})
	var b bytes.Buffer
	if err := WriteTable(&b, r, TableOptions{}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	runtime := section(out, "RUNTIME")
	if n := strings.Count(runtime, noRuntime); n != 1 {
		t.Errorf("runtime reason in %d rows, want 1:\n%s", n, out)
	}
	if !strings.Contains(runtime, "  N/A     3 checks  -       "+noRuntime+" (--verbose lists each check)\n") {
		t.Errorf("no collapsed runtime row:\n%s", out)
	}
	for _, name := range []string{"cri-runtime", "cri-crash-loop", "cri-inventory"} {
		if strings.Contains(runtime, name) {
			t.Errorf("collapsed area names %s:\n%s", name, out)
		}
	}
	for _, want := range []string{"bridge-netfilter", "hairpin", "kube-proxy-rules", "kube-proxy-health", "N/A     kernel-log  -       no log source"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "9 checks: 1 ok, 0 warning, 0 problem, 0 error, 8 not applicable") {
		t.Errorf("summary does not count each check:\n%s", out)
	}

	b.Reset()
	if err := WriteTable(&b, r, TableOptions{Verbose: true}); err != nil {
		t.Fatal(err)
	}
	runtime = section(b.String(), "RUNTIME")
	if n := strings.Count(runtime, noRuntime); n != 3 {
		t.Errorf("verbose: runtime reason in %d rows, want 3:\n%s", n, b.String())
	}
	for _, name := range []string{"cri-runtime", "cri-crash-loop", "cri-inventory"} {
		if !strings.Contains(runtime, "  N/A     "+name) {
			t.Errorf("verbose: no row for %s:\n%s", name, b.String())
		}
	}
	if strings.Contains(runtime, "3 checks") {
		t.Errorf("verbose: collapsed row:\n%s", b.String())
	}
}

// section returns the table of one area, from its heading to the next blank line.
func TestTableCollapsesAreaThatCannotRun(t *testing.T) {
	at := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	refused := errors.New("cri: dial unix /run/containerd/containerd.sock: connect: connection refused")
	failed := func(name string, err error) check.Result {
		return check.Result{Check: name, Area: "runtime", Status: check.StatusError, Err: err}
	}
	r := New("node-1", "v0.1.0", at, []check.Result{
		failed("cri-runtime", refused), failed("cri-crash-loop", refused), failed("cri-inventory", refused),
		{Check: "kernel-log", Area: "kernel", Status: check.StatusError, Err: refused},
		{Check: "kernel-oom", Area: "kernel", Status: check.StatusError, Err: errors.New("other")},
	})
	var b bytes.Buffer
	if err := WriteTable(&b, r, TableOptions{}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	want := "  ERROR   3 checks  -       could not run: " + refused.Error() + " (--verbose lists each check)\n"
	if runtime := section(out, "RUNTIME"); !strings.Contains(runtime, want) || strings.Count(runtime, "connection refused") != 1 {
		t.Errorf("no one collapsed error row:\n%s", out)
	}
	// Two different errors: a row each.
	if kernel := section(out, "KERNEL"); !strings.Contains(kernel, "kernel-log") || !strings.Contains(kernel, "kernel-oom") {
		t.Errorf("kernel errors collapsed:\n%s", out)
	}
	b.Reset()
	if err := WriteTable(&b, r, TableOptions{Verbose: true}); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(section(b.String(), "RUNTIME"), "connection refused"); n != 3 {
		t.Errorf("verbose: %d error rows, want 3:\n%s", n, b.String())
	}
}

func section(out, area string) string {
	i := strings.Index(out, "\n"+area+"\n")
	if i < 0 {
		return ""
	}
	s := out[i+1:]
	if j := strings.Index(s, "\n\n"); j >= 0 {
		s = s[:j+1]
	}
	return s
}
