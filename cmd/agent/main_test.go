package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/node-doctor/node-doctor/internal/testnetns"
)

// These tests run the built binary, as a person or a DaemonSet would.

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "node-doctor-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "node-doctor")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build node-doctor: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type report struct {
	Node    string
	Summary map[string]int
	Results []struct {
		Check, Area, Status, Error string
		Findings                   []struct{ Severity, Reason, Message, Condition string }
	}
}

func (r report) status(name string) string {
	for _, res := range r.Results {
		if res.Check == name {
			return res.Status
		}
	}
	return "missing"
}

func (r report) reasons(name string) string {
	var s []string
	for _, res := range r.Results {
		if res.Check == name {
			for _, f := range res.Findings {
				s = append(s, f.Severity+":"+f.Reason)
			}
		}
	}
	return strings.Join(s, ",")
}

func runBinary(t *testing.T, prefix []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	argv := append(append(prefix, binary), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %v: %v", argv, err)
	}
	return o.String(), e.String(), code
}

func checkJSON(t *testing.T, prefix []string, args ...string) (report, int) {
	t.Helper()
	out, errOut, code := runBinary(t, prefix, append([]string{"check", "-o", "json"}, args...)...)
	var r report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("check -o json: not JSON (%v); exit %d\nstdout: %s\nstderr: %s", err, code, out, errOut)
	}
	return r, code
}

func TestCheckOnThisMachine(t *testing.T) {
	r, code := checkJSON(t, nil)
	if code != 0 && code != 1 {
		t.Fatalf("exit code %d", code)
	}
	if r.Node == "" {
		t.Fatalf("report names no node: %+v", r)
	}
	for _, c := range []string{"ip-forward", "bridge-netfilter", "hairpin"} {
		if r.status(c) == "missing" {
			t.Errorf("report lacks %s", c)
		}
	}
	for _, res := range r.Results {
		if res.Status == "error" {
			t.Errorf("%s could not run on this machine: %s", res.Check, res.Error)
		}
	}
	wantCode := 0
	if r.Summary["problem"]+r.Summary["error"] > 0 {
		wantCode = 1
	}
	if code != wantCode {
		t.Errorf("exit code %d with summary %v, want %d", code, r.Summary, wantCode)
	}

	out, _, _ := runBinary(t, nil, "check", "--color", "always", "--only", "ip-forward")
	if !strings.Contains(out, "NETWORK") || !strings.Contains(out, "ip-forward") || !strings.Contains(out, "\x1b[") {
		t.Errorf("table:\n%s", out)
	}
	out, _, _ = runBinary(t, nil, "check", "--only", "ip-forward")
	if strings.Contains(out, "\x1b[") {
		t.Error("colour written to a pipe")
	}
	out, _, code = runBinary(t, nil, "check", "-o", "yaml", "--skip", "hairpin,bridge-netfilter")
	if code > 1 || !strings.Contains(out, "check: ip-forward") || strings.Contains(out, "hairpin") {
		t.Errorf("yaml with --skip (exit %d):\n%s", code, out)
	}
}

func TestToolFailuresExitTwo(t *testing.T) {
	dir := t.TempDir()
	badKey := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badKey, []byte("checks:\n  hairpin:\n    bridgez: [cni0]\n"), 0o600)
	cases := map[string]struct {
		args []string
		want string
	}{
		"bad output":      {[]string{"check", "-o", "xml"}, `--output "xml" is not one of table, json, yaml`},
		"unknown flag":    {[]string{"check", "--nope"}, "unknown flag: --nope"},
		"unknown check":   {[]string{"check", "--only", "dns"}, `unknown check "dns"; known checks: ip-forward, bridge-netfilter, hairpin`},
		"missing config":  {[]string{"check", "--config", filepath.Join(dir, "none.yaml")}, "none.yaml: no such file"},
		"bad config key":  {[]string{"check", "--config", badKey}, "checks.hairpin.bridgez (line 3): unknown key"},
		"bad host root":   {[]string{"check", "--host-root", filepath.Join(dir, "nope")}, "is not a directory"},
		"bad log level":   {[]string{"run", "--log-level", "loud"}, `logLevel: "loud" is not one of`},
		"bad address":     {[]string{"run", "--metrics-address", "nonsense"}, `metricsAddress: "nonsense" is not host:port`},
		"cert, no key":    {[]string{"run", "--metrics-secure", "--metrics-cert-file", "/etc/tls/tls.crt"}, "metricsCertFile, metricsKeyFile: give both or neither"},
		"secure, no API":  {[]string{"run", "--metrics-secure", "--metrics-address", "127.0.0.1:0", "--health-address", "127.0.0.1:0"}, "secure metrics need a Kubernetes API to check tokens with (--metrics-secure=false serves them plain)"},
		"bad health addr": {[]string{"run", "--health-address", "nowhere"}, `healthAddress: "nowhere" is not host:port`},
		"unknown command": {[]string{"chek"}, `unknown command "chek"`},
		"extra arguments": {[]string{"check", "hairpin"}, `unknown command "hairpin"`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, errOut, code := runBinary(t, nil, c.args...)
			if code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			if !strings.Contains(errOut, c.want) {
				t.Errorf("stderr %q lacks %q", errOut, c.want)
			}
			if strings.Contains(errOut, "panic") || strings.Contains(errOut, "goroutine ") {
				t.Errorf("crashed: %s", errOut)
			}
		})
	}
}

func TestHelpAndVersion(t *testing.T) {
	out, _, code := runBinary(t, nil, "--help")
	if code != 0 || !strings.Contains(out, "check") || !strings.Contains(out, "--host-root") {
		t.Errorf("--help (exit %d):\n%s", code, out)
	}
	out, _, _ = runBinary(t, nil, "check", "--help")
	for _, f := range []string{"--output", "--only", "--skip", "--verbose", "--color", "Exit code"} {
		if !strings.Contains(out, f) {
			t.Errorf("check --help lacks %s", f)
		}
	}
	out, _, _ = runBinary(t, nil, "run", "--help")
	if !strings.Contains(out, "--metrics-address") || !strings.Contains(out, ":19720") || !strings.Contains(out, "--metrics-secure") ||
		!strings.Contains(out, "--health-address") || !strings.Contains(out, "SubjectAccessReview") {
		t.Errorf("run --help:\n%s", out)
	}
	out, _, code = runBinary(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "node-doctor ") {
		t.Errorf("version: %q", out)
	}
	out, _, _ = runBinary(t, nil, "check", "--list")
	if !strings.Contains(out, "hairpin") || !strings.Contains(out, "1m0s") {
		t.Errorf("--list:\n%s", out)
	}
}

var addrRe = regexp.MustCompile(`msg="serving metrics and probes" address=(\S+)`)

// TestRunServesMetrics starts the agent on a loopback port, scrapes it and
// stops it with SIGTERM.
func TestRunServesMetrics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "run", "--metrics-address", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var addr string
	var logged []string
	for addr == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("agent exited before serving:\n%s", strings.Join(logged, "\n"))
			}
			logged = append(logged, l)
			if m := addrRe.FindStringSubmatch(l); m != nil {
				addr = m[1]
			}
		case <-ctx.Done():
			t.Fatal("agent never said where it serves")
		}
	}
	go func() {
		for range lines {
		}
	}()
	base := "http://" + addr

	var code int
	var body string
	for i := 0; i < 100; i++ {
		code, body = get(t, base+"/readyz")
		if code == http.StatusOK {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	if code, body = get(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	code, body = get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`node_doctor_check_status{check="ip-forward",status=`,
		`node_doctor_check_duration_seconds_count{check="hairpin"} 1`,
		`node_doctor_check_errors_total{check="bridge-netfilter"} 0`,
		`node_doctor_build_info{goversion=`,
		"go_goroutines ", "process_resident_memory_bytes ",
		"node_doctor_kernel_log_lines_read_total", "node_doctor_cri_",
		// NPD's, for its users' dashboards and alerts; the built-in kernel
		// rules' series start at 0, as NPD's do.
		"# TYPE problem_gauge gauge", "# TYPE problem_counter counter",
		`problem_counter{reason="OOMKilling"} `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		if p.Metric == "problem_counter" || p.Metric == "problem_gauge" {
			continue // NPD's names, kept as NPD has them
		}
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	if code, _ = get(t, base+"/nope"); code != http.StatusNotFound {
		t.Errorf("/nope: %d", code)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent did not exit cleanly on SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not stop within 10s of SIGTERM")
	}
}

func TestRunPortInUse(t *testing.T) {
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, errOut, code := runBinary(t, nil, "run", "--metrics-address", ln.Addr().String())
	if code != 2 || !strings.Contains(errOut, "address already in use") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPrivilegedCheckInNetns runs the binary inside a throwaway network
// namespace with a real pod-style bridge, breaks the sysctls and a hairpin
// port for real, and watches the report turn red with the fix, then green.
func TestPrivilegedCheckInNetns(t *testing.T) {
	ns := testnetns.New(t)
	ports := ns.Bridge(t, "cni0", 2, true)
	in := []string{"ip", "netns", "exec", ns.Name}
	// Only the checks this test breaks: the host's other state (a harness
	// kubelet in the host's network namespace, OOM kills in the kernel log)
	// is not this test's.
	skip := []string{"--only", "ip-forward,bridge-netfilter,hairpin"}
	ns.Sysctl(t, "net.ipv4.ip_forward", "1")
	ns.Sysctl(t, "net.bridge.bridge-nf-call-iptables", "1")

	r, code := checkJSON(t, in, skip...)
	for _, c := range []string{"ip-forward", "bridge-netfilter", "hairpin"} {
		if r.status(c) != "ok" {
			t.Errorf("healthy netns: %s is %s (%s)", c, r.status(c), r.reasons(c))
		}
	}
	if code != 0 {
		t.Errorf("healthy netns: exit %d", code)
	}

	ns.Sysctl(t, "net.ipv4.ip_forward", "0")
	ns.Sysctl(t, "net.bridge.bridge-nf-call-iptables", "0")
	ns.SetHairpin(t, ports[0], false)
	r, code = checkJSON(t, in, skip...)
	if code != 1 {
		t.Errorf("broken netns: exit %d, want 1", code)
	}
	for c, want := range map[string]string{
		"ip-forward":       "problem:IPForwardDisabled",
		"bridge-netfilter": "problem:BridgeNfCallIptablesDisabled",
		"hairpin":          "problem:HairpinModeOff",
	} {
		if r.status(c) != "problem" || r.reasons(c) != want {
			t.Errorf("broken netns: %s is %s %s, want %s", c, r.status(c), r.reasons(c), want)
		}
	}
	table, _, _ := runBinary(t, in, append([]string{"check"}, skip...)...)
	for _, fix := range []string{"sysctl -w net.ipv4.ip_forward=1", "sysctl -w net.bridge.bridge-nf-call-iptables=1", "hairpin mode is off on 1 of 2 pod ports (" + ports[0] + ")"} {
		if !strings.Contains(table, fix) {
			t.Errorf("report does not say %q:\n%s", fix, table)
		}
	}

	ns.Sysctl(t, "net.ipv4.ip_forward", "1")
	ns.Sysctl(t, "net.bridge.bridge-nf-call-iptables", "1")
	ns.SetHairpin(t, ports[0], true)
	if r, code = checkJSON(t, in, skip...); code != 0 || r.Summary["problem"] != 0 {
		t.Errorf("fixed netns: exit %d, summary %v", code, r.Summary)
	}
}
