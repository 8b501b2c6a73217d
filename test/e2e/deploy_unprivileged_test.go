//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/node-doctor/node-doctor/test/harness"
)

// Capability bits (linux/capability.h) of the unprivileged component's set.
const (
	capNetAdmin = 12
	capNetRaw   = 13
)

// reportResult is one check's line of `node-doctor check -o json`.
type reportResult struct {
	Check         string `json:"check"`
	Status        string `json:"status"`
	Error         string `json:"error"`
	NotApplicable string `json:"not_applicable_reason"`
}

func (r reportResult) why() string {
	if r.Error != "" {
		return r.Error
	}
	return r.NotApplicable
}

func parseReport(t *testing.T, out []byte) map[string]reportResult {
	t.Helper()
	var rep struct {
		Results []reportResult `json:"results"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("node-doctor check -o json: %v\n%s", err, out)
	}
	m := map[string]reportResult{}
	for _, r := range rep.Results {
		m[r.Check] = r
	}
	return m
}

// execReport runs `node-doctor check -o json` inside the agent's container
// through CRI ExecSync: the same image, mounts, environment, user and
// capabilities as the running agent.
func execReport(ctx context.Context, t *testing.T, c *harness.Cluster, pod *corev1.Pod, args ...string) map[string]reportResult {
	t.Helper()
	if len(pod.Status.ContainerStatuses) == 0 {
		t.Fatalf("pod %s has no container status", pod.Name)
	}
	id := pod.Status.ContainerStatuses[0].ContainerID
	id = id[strings.Index(id, "://")+3:]
	conn, err := harness.DialCRI(ctx, c.CRIEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := runtimeapi.NewRuntimeServiceClient(conn).ExecSync(ctx, &runtimeapi.ExecSyncRequest{
		ContainerId: id,
		Cmd:         append([]string{"/usr/local/bin/node-doctor", "check", "-o", "json"}, args...),
		Timeout:     120,
	})
	if err != nil {
		t.Fatalf("exec node-doctor check in %s: %v", pod.Name, err)
	}
	if resp.ExitCode > 1 {
		t.Fatalf("node-doctor check in the pod exited %d:\n%s\n%s", resp.ExitCode, resp.Stdout, resp.Stderr)
	}
	return parseReport(t, resp.Stdout)
}

// hostReport runs `node-doctor check -o json` on the node itself with only
// the named capabilities in its bounding set (setpriv), as root: what each
// check needs, without the pod's device cgroup or mount namespace.
func hostReport(ctx context.Context, t *testing.T, c *harness.Cluster, bin string, caps []string) map[string]reportResult {
	t.Helper()
	bset := "-all"
	for _, cp := range caps {
		bset += ",+" + strings.ToLower(cp)
	}
	// The harness's Node has no spec.podCIDRs: forward-policy is told the
	// pod range, so that it runs.
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("checks:\n  forward-policy:\n    podCIDRs: [%q]\n", c.PodCIDR)), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=" + bset, "--",
		bin, "check", "-o", "json", "--config=" + cfg, "--host-root=/", "--runtime-endpoint=" + c.CRIEndpoint,
		"--kubeconfig=" + c.Kubeconfig, "--node-name=" + c.NodeName}
	cmd := exec.CommandContext(ctx, "setpriv", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
		t.Fatalf("setpriv %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return parseReport(t, stdout.Bytes())
}

// checkNames lists every check the agent has (node-doctor check --list).
func checkNames(t *testing.T, bin string) []string {
	t.Helper()
	out, err := exec.Command(bin, "check", "--list").Output()
	if err != nil {
		t.Fatalf("node-doctor check --list: %v", err)
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n")[1:] {
		if f := strings.Fields(l); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

// deviceCgroup returns the devices.list of a process's cgroup v1 devices
// controller; false without one.
func deviceCgroup(t *testing.T, pid int) (string, bool) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if parts := strings.SplitN(l, ":", 3); len(parts) == 3 && parts[1] == "devices" {
			d, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/devices", parts[2], "devices.list"))
			if err != nil {
				t.Fatal(err)
			}
			return string(d), true
		}
	}
	return "", false
}

// allowsKmsgRead says whether a devices.list ("c 1:3 rwm", "a *:* rwm")
// lets a process read /dev/kmsg, character device 1:11.
func allowsKmsgRead(list string) bool {
	for _, l := range strings.Split(list, "\n") {
		f := strings.Fields(l)
		if len(f) != 3 || (f[0] != "a" && f[0] != "c") || !strings.Contains(f[2], "r") {
			continue
		}
		maj, minor, _ := strings.Cut(f[1], ":")
		if (maj == "*" || maj == "1") && (minor == "*" || minor == "11") {
			return true
		}
	}
	return false
}

// procCaps reads a process's effective and bounding capability sets.
func procCaps(t *testing.T, pid int) (eff, bnd uint64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseUint(f[1], 16, 64)
		switch f[0] {
		case "CapEff:":
			eff = v
		case "CapBnd:":
			bnd = v
		}
	}
	return eff, bnd
}

var checkStatusLine = regexp.MustCompile(`^node_doctor_check_status\{check="([^"]+)",status="([^"]+)"\} 1$`)

// agentStatuses scrapes the running agent's secure /metrics (hostNetwork:
// the node's loopback) with token for each check's current status.
func agentStatuses(ctx context.Context, token string) (map[string]string, error) {
	code, body, err := scrape(ctx, insecureTLS, "https://127.0.0.1:19720/metrics", token)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %d %s", code, body)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if m := checkStatusLine.FindStringSubmatch(sc.Text()); m != nil {
			out[m[1]] = m[2]
		}
	}
	return out, sc.Err()
}

// TestDeployUnprivileged installs deploy/ with components/unprivileged —
// every capability dropped but NET_ADMIN and NET_RAW, not privileged, the
// kernel-log check and /dev/kmsg off — on the real node and checks: the pod
// becomes Ready; the agent process really holds just those two
// capabilities and its device cgroup has no /dev/kmsg; every check but
// kernel-log runs from inside the container (none could not run), the
// running agent's metrics agree, and the kernel conditions are not written; turning hairpin off on a pod's port shows up
// in `kubectl describe node` from that pod. Then, on the node, it runs
// `node-doctor check` with capability sets around the component's and logs
// which check needs which (the table in docs/deploy.md). E2E_PROXY_MODE
// (iptables, the default, or nftables) picks kube-proxy's mode.
func TestDeployUnprivileged(t *testing.T) {
	harness.RequireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatalf("setpriv (util-linux) not found: %v", err)
	}
	mode := os.Getenv("E2E_PROXY_MODE")
	if mode == "" {
		mode = "iptables"
	}
	bin := buildStaticAgent(t)
	// GKE's admission for critical pods, as in TestDeployDaemonSet.
	c := harness.StartT(t, harness.Options{ProxyMode: mode, CriticalPodsNeedQuota: true})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	importAgentImage(ctx, t, c, bin)

	kernelConds := []string{"KernelDeadlock", "ReadonlyFilesystem", "FrequentUnregisterNetDevice"}
	for _, typ := range append([]string{"NetworkConfigProblem", "ContainerRuntimeProblem"}, kernelConds...) {
		if cond := condition(ctx, t, c, typ); cond != nil {
			t.Fatalf("%s on the node before node-doctor is installed: %s", typ, condString(cond))
		}
	}
	_, port := podOnBridge(ctx, t, c, "unpriv")

	overlay := deployOverlay(t, c, "components/unprivileged")
	bindCtx, stopBinding := context.WithCancel(ctx)
	defer stopBinding()
	bindPods(bindCtx, t, c)
	pod := installAgent(ctx, t, c, overlay)
	sc := pod.Spec.Containers[0].SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.Capabilities == nil {
		t.Fatalf("the pod is not the unprivileged variant: %+v", sc)
	}

	// The process's real capabilities, not just the manifest's.
	var pid int
	for p, inPod := range hostAgentProcs() {
		if inPod {
			pid = p
		}
	}
	if pid == 0 {
		t.Fatal("no node-doctor process in a pod")
	}
	want := uint64(1)<<capNetAdmin | 1<<capNetRaw
	eff, bnd := procCaps(t, pid)
	t.Logf("agent pid %d: CapEff %016x CapBnd %016x", pid, eff, bnd)
	if eff != want || bnd != want {
		t.Errorf("agent capabilities: effective %016x, bounding %016x; want %016x (NET_ADMIN, NET_RAW)", eff, bnd, want)
	}
	// Why kernel-log cannot run here, whatever the capabilities: the
	// container's device cgroup does not allow /dev/kmsg (char 1:11).
	if devs, ok := deviceCgroup(t, pid); ok {
		t.Logf("agent's device cgroup allows:\n%s", devs)
		if allowsKmsgRead(devs) {
			t.Errorf("the unprivileged agent's device cgroup allows reading /dev/kmsg:\n%s", devs)
		}
	} else {
		t.Log("no devices controller (cgroup v2: device access is an eBPF program, not listed)")
	}

	// Every check from inside the container.
	inPod := execReport(ctx, t, c, pod, "--config=/etc/node-doctor/config.yaml")
	names := make([]string, 0, len(inPod))
	for n := range inPod {
		names = append(names, n)
	}
	sort.Strings(names)
	var tbl strings.Builder
	tw := tabwriter.NewWriter(&tbl, 0, 0, 2, ' ', 0)
	for _, n := range names {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", n, inPod[n].Status, inPod[n].why())
	}
	tw.Flush()
	t.Logf("node-doctor check in the unprivileged pod:\n%s", tbl.String())
	if _, ok := inPod["kernel-log"]; ok {
		t.Errorf("kernel-log ran in the unprivileged pod; the component turns it off")
	}
	for _, n := range checkNames(t, bin) {
		if _, ok := inPod[n]; !ok && n != "kernel-log" {
			t.Errorf("%s did not run in the unprivileged pod", n)
		}
	}
	for _, n := range names {
		if inPod[n].Status == "error" {
			t.Errorf("%s could not run unprivileged: %s", n, inPod[n].Error)
		}
	}
	// cluster-dns read the kubelet's config file and its resolvConf
	// (/etc/resolv.conf) through the mounts: not "not visible under the
	// host root", no ResolvConfMissing. The harness's kubelet sets no
	// clusterDNS, so after reading both that is all it can say here.
	if r := inPod["cluster-dns"]; r.Status != "not_applicable" || !strings.Contains(r.why(), "sets no clusterDNS") {
		t.Errorf("cluster-dns in the unprivileged pod: %s %s; want the kubelet's config and resolvConf read", r.Status, r.why())
	}

	// The running agent agrees, and wrote its conditions, but none of the
	// kernel ones.
	waitFor(t, "node-doctor's conditions on the node", 2*time.Minute, func() (bool, string) {
		a, b := condition(ctx, t, c, "NetworkConfigProblem"), condition(ctx, t, c, "ContainerRuntimeProblem")
		return a != nil && b != nil, condString(a) + "; " + condString(b)
	})
	for _, typ := range []string{"NetworkConfigProblem", "ContainerRuntimeProblem"} {
		if cond := condition(ctx, t, c, typ); cond.Status == corev1.ConditionUnknown {
			t.Errorf("%s is Unknown from the unprivileged pod: %s", typ, condString(cond))
		}
	}
	for _, typ := range kernelConds {
		if cond := condition(ctx, t, c, typ); cond != nil {
			t.Errorf("%s written by the unprivileged agent, whose kernel-log check is off: %s", typ, condString(cond))
		}
	}
	// RBAC may take a moment to see the new binding.
	token := scraperToken(ctx, t, c, "scraper", true)
	var st map[string]string
	waitFor(t, "the agent's metrics with a reader-bound token", time.Minute, func() (bool, string) {
		var err error
		st, err = agentStatuses(ctx, token)
		return err == nil, fmt.Sprint(err)
	})
	t.Logf("the running agent's check statuses: %v", st)
	for n, s := range st {
		if s == "error" {
			t.Errorf("the running agent reports %s as could-not-run", n)
		}
	}
	if _, ok := st["kernel-log"]; ok {
		t.Errorf("the running agent reports kernel-log, which the component turns off")
	}
	if log := podLog(t, c, pod); strings.Contains(log, "check could not run") {
		t.Errorf("the unprivileged agent's log has checks that could not run:\n%s", log)
	}

	// Break the node: hairpin off on the pod's port.
	setHairpin(t, port, false)
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(port); err == nil {
			_ = netlink.LinkSetHairpin(l, true)
		}
	})
	broke := time.Now()
	waitFor(t, "NetworkConfigProblem=True HairpinModeOff from the unprivileged pod", 3*time.Minute, func() (bool, string) {
		cond := condition(ctx, t, c, "NetworkConfigProblem")
		return cond != nil && cond.Status == corev1.ConditionTrue && cond.Reason == "HairpinModeOff", condString(cond)
	})
	t.Logf("HairpinModeOff %s after the break", time.Since(broke).Round(time.Second))
	desc, err := kubectl(ctx, c.Kubeconfig, "describe", "node", c.NodeName)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(desc, "HairpinModeOff") || !strings.Contains(desc, port) {
		t.Errorf("kubectl describe node does not show HairpinModeOff on %s:\n%s", port, desc)
	}
	if log := podLog(t, c, pod); !strings.Contains(log, "HairpinModeOff") {
		t.Errorf("the unprivileged pod's log does not show the HairpinModeOff change:\n%s", log)
	}
	setHairpin(t, port, true)

	// What each check needs: node-doctor check on the node (no device
	// cgroup) with NET_ADMIN, NET_RAW and SYSLOG, each one left out, and none.
	sets := []struct {
		name string
		caps []string
	}{
		{"NET_ADMIN,NET_RAW,SYSLOG", []string{"NET_ADMIN", "NET_RAW", "SYSLOG"}},
		{"-NET_ADMIN", []string{"NET_RAW", "SYSLOG"}},
		{"-NET_RAW", []string{"NET_ADMIN", "SYSLOG"}},
		{"-SYSLOG", []string{"NET_ADMIN", "NET_RAW"}},
		{"none", nil},
	}
	reports := make([]map[string]reportResult, len(sets))
	for i, s := range sets {
		reports[i] = hostReport(ctx, t, c, bin, s.caps)
	}
	var mtx strings.Builder
	tw = tabwriter.NewWriter(&mtx, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "check")
	for _, s := range sets {
		fmt.Fprintf(tw, "\t%s", s.name)
	}
	fmt.Fprintln(tw)
	all := make([]string, 0, len(reports[0]))
	for n := range reports[0] {
		all = append(all, n)
	}
	sort.Strings(all)
	var whys []string
	for _, n := range all {
		fmt.Fprint(tw, n)
		for i, s := range sets {
			r := reports[i][n]
			fmt.Fprintf(tw, "\t%s", r.Status)
			if r.Status == "error" {
				whys = append(whys, fmt.Sprintf("%s [%s]: %s", n, s.name, r.Error))
			}
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	t.Logf("node-doctor check on the node, by bounding capability set (root, no other capability):\n%s\n%s", mtx.String(), strings.Join(whys, "\n"))
	for _, n := range all {
		if r := reports[0][n]; r.Status == "error" {
			t.Errorf("%s could not run on the node with NET_ADMIN, NET_RAW and SYSLOG: %s", n, r.Error)
		}
		if r := reports[3][n]; r.Status == "error" && n != "kernel-log" {
			t.Errorf("%s could not run on the node with the component's NET_ADMIN and NET_RAW: %s", n, r.Error)
		}
	}
	for _, n := range []string{"kube-proxy-rules", "iptables-backends", "forward-policy"} {
		if r := reports[1][n]; r.Status != "error" {
			t.Errorf("%s without NET_ADMIN: %s, want error (nf_tables netlink dumps need it)", n, r.Status)
		}
	}
	// SYSLOG is what /dev/kmsg needs where kernel.dmesg_restrict=1, and
	// only where the device itself is allowed (not in the component).
	if b, _ := os.ReadFile("/proc/sys/kernel/dmesg_restrict"); strings.TrimSpace(string(b)) == "1" {
		if r := reports[3]["kernel-log"]; r.Status != "error" {
			t.Errorf("kernel-log without SYSLOG, dmesg_restrict=1: %s, want error", r.Status)
		}
	}
}

// TestDeployUnprivilegedLegacyIPTables shows what NET_RAW is for: in a
// network namespace of its own with a KUBE-* chain in both iptables
// backends, node-doctor check (as root, bounding set NET_ADMIN and NET_RAW,
// the unprivileged component's) finds the chains in both; it logs what it
// finds with NET_ADMIN alone and with NET_RAW alone.
func TestDeployUnprivilegedLegacyIPTables(t *testing.T) {
	harness.RequireRoot(t)
	for _, tool := range []string{"ip", "setpriv", "iptables-legacy", "iptables-nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: %v", tool, err)
		}
	}
	bin := buildStaticAgent(t)
	ns := fmt.Sprintf("nd-caps-%d", os.Getpid())
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	run("ip", "netns", "exec", ns, "iptables-legacy", "-t", "nat", "-N", "KUBE-SERVICES")
	run("ip", "netns", "exec", ns, "iptables-nft", "-t", "nat", "-N", "KUBE-SERVICES")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	backends := func(caps ...string) reportResult {
		bset := "-all"
		for _, cp := range caps {
			bset += ",+" + strings.ToLower(cp)
		}
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "setpriv", "--inh-caps=-all", "--ambient-caps=-all",
			"--bounding-set="+bset, "--", bin, "check", "-o", "json", "--only=iptables-backends")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
			t.Fatalf("node-doctor check in %s: %v\n%s", ns, err, stderr.String())
		}
		return parseReport(t, stdout.Bytes())["iptables-backends"]
	}
	full := backends("NET_ADMIN", "NET_RAW")
	noRaw := backends("NET_ADMIN")
	noAdmin := backends("NET_RAW")
	for name, r := range map[string]reportResult{"NET_ADMIN,NET_RAW": full, "NET_ADMIN": noRaw, "NET_RAW": noAdmin} {
		t.Logf("iptables-backends with %s: %s %s", name, r.Status, r.why())
	}
	if full.Status != "problem" {
		t.Errorf("iptables-backends with NET_ADMIN and NET_RAW: %s %s; want problem (KUBE-SERVICES in both backends)", full.Status, full.why())
	}
	if noAdmin.Status != "error" {
		t.Errorf("iptables-backends with NET_RAW only: %s; want error", noAdmin.Status)
	}
}
