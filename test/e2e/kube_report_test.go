//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/node-doctor/node-doctor/pkg/checks"
	"github.com/node-doctor/node-doctor/test/harness"
)

// agentProc is a running `node-doctor run` reporting to the harness node.
type agentProc struct {
	cmd  *exec.Cmd
	done chan error
}

// startAgent runs the agent against the node with short intervals.
func startAgent(t *testing.T, c *harness.Cluster, bin string, extra ...string) *agentProc {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	var b strings.Builder
	b.WriteString("checks:\n")
	for _, name := range []string{"ip-forward", "bridge-netfilter", "hairpin", "cri-crash-loop", "kernel-log"} {
		fmt.Fprintf(&b, "  %s: {interval: 2s, timeout: 2s}\n", name)
	}
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return runReportingAgent(t, c, bin, cfg, func(string) bool { return true }, extra...)
}

// runReportingAgent runs `node-doctor run` with cfg against the node and logs the
// lines of its log that show says to.
func runReportingAgent(t *testing.T, c *harness.Cluster, bin, cfg string, show func(line string) bool, extra ...string) *agentProc {
	t.Helper()
	args := append([]string{"run", "--config", cfg, "--kubeconfig", c.Kubeconfig, "--node-name", c.NodeName,
		"--runtime-endpoint", c.CRIEndpoint, "--metrics-address", "127.0.0.1:0", "--condition-heartbeat", "10s"}, extra...)
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &agentProc{cmd: cmd, done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if line := sc.Text(); show(line) {
				t.Logf("agent: %s", line)
			}
		}
	}()
	go func() { a.done <- cmd.Wait() }()
	t.Cleanup(func() { a.stop(t) })
	return a
}

func (a *agentProc) stop(t *testing.T) {
	t.Helper()
	if a.cmd.ProcessState != nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-a.done:
		if err != nil {
			t.Errorf("agent exit: %v", err)
		}
	case <-time.After(15 * time.Second):
		_ = a.cmd.Process.Kill()
		t.Error("agent did not stop within 15s of SIGTERM")
	}
}

func waitFor(t *testing.T, what string, timeout time.Duration, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, state := f()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last seen: %s", timeout, what, last)
		}
		time.Sleep(time.Second)
	}
}

func condition(ctx context.Context, t *testing.T, c *harness.Cluster, typ string) *corev1.NodeCondition {
	t.Helper()
	cond, err := c.NodeCondition(ctx, corev1.NodeConditionType(typ))
	if err != nil {
		t.Fatalf("read node condition %s: %v", typ, err)
	}
	return cond
}

func condString(cond *corev1.NodeCondition) string {
	if cond == nil {
		return "absent"
	}
	return fmt.Sprintf("%s %s %q since %s", cond.Status, cond.Reason, cond.Message, cond.LastTransitionTime)
}

// cni0Ports lists the veth ports of the pod bridge; the bridge CNI plugin
// creates the bridge with the first pod.
func cni0Ports(t *testing.T) map[string]bool {
	t.Helper()
	br, err := netlink.LinkByName(harness.BridgeName)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return map[string]bool{}
	}
	if err != nil {
		t.Fatalf("find %s: %v", harness.BridgeName, err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index && l.Type() == "veth" {
			out[l.Attrs().Name] = true
		}
	}
	return out
}

// podOnBridge runs a pod in a new namespace and returns the namespace and
// the pod's port on the bridge, found as the veth that appeared for it.
func podOnBridge(ctx context.Context, t *testing.T, c *harness.Cluster, prefix string) (ns, port string) {
	t.Helper()
	ns, err := c.CreateNamespace(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	before := cni0Ports(t)
	if _, err := c.CreatePod(ctx, harness.PodOptions{Namespace: ns, Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitForPod(ctx, ns, "web", 2*time.Minute, harness.PodRunningReady); err != nil {
		t.Fatal(err)
	}
	for p := range cni0Ports(t) {
		if !before[p] {
			port = p
		}
	}
	if port == "" {
		t.Fatal("no new cni0 port for the pod")
	}
	return ns, port
}

func setHairpin(t *testing.T, port string, on bool) {
	t.Helper()
	l, err := netlink.LinkByName(port)
	if err != nil {
		t.Fatalf("find %s: %v", port, err)
	}
	if err := netlink.LinkSetHairpin(l, on); err != nil {
		t.Fatalf("hairpin %s=%v: %v", port, on, err)
	}
}

func nodeEvents(ctx context.Context, t *testing.T, c *harness.Cluster, reason string) []corev1.Event {
	t.Helper()
	evs, err := c.NodeEvents(ctx)
	if err != nil {
		t.Fatalf("node events: %v", err)
	}
	var out []corev1.Event
	for _, e := range evs {
		if e.Reason == reason && e.Source.Component == "node-doctor" {
			out = append(out, e)
		}
	}
	return out
}

// TestKubeReporting breaks the real node (a hairpin port, a crash-looping
// pod) and checks what `kubectl describe node` shows: node-doctor's
// condition with reason and message, its Events, kubelet's conditions
// untouched; then restarts the agent (nothing flips, no duplicate event),
// fixes the node (the condition goes False) and disables the checks (the
// condition is removed).
func TestKubeReporting(t *testing.T) {
	harness.RequireRoot(t)
	bin := buildAgent(t)
	c := harness.StartT(t, harness.Options{ProxyMode: "iptables"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ns, port := podOnBridge(ctx, t, c, "report")

	agent := startAgent(t, c, bin)
	waitFor(t, "NetworkConfigProblem=False on the node", 60*time.Second, func() (bool, string) {
		cond := condition(ctx, t, c, "NetworkConfigProblem")
		return cond != nil && cond.Status == corev1.ConditionFalse, condString(cond)
	})

	setHairpin(t, port, false)
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(port); err == nil {
			_ = netlink.LinkSetHairpin(l, true)
		}
	})
	waitFor(t, "NetworkConfigProblem=True HairpinModeOff", 60*time.Second, func() (bool, string) {
		cond := condition(ctx, t, c, "NetworkConfigProblem")
		return cond != nil && cond.Status == corev1.ConditionTrue && cond.Reason == "HairpinModeOff", condString(cond)
	})
	cond := condition(ctx, t, c, "NetworkConfigProblem")
	if !strings.Contains(cond.Message, port) || !strings.Contains(cond.Message, "hairpinMode") {
		t.Errorf("condition message does not name the port and the fix: %q", cond.Message)
	}
	ready := condition(ctx, t, c, "Ready")
	if ready == nil || ready.Status != corev1.ConditionTrue || ready.Reason != "KubeletReady" {
		t.Errorf("kubelet's Ready changed: %s", condString(ready))
	}
	waitFor(t, "a HairpinModeOff event on the node", 30*time.Second, func() (bool, string) {
		evs := nodeEvents(ctx, t, c, "HairpinModeOff")
		return len(evs) == 1, fmt.Sprintf("%d events", len(evs))
	})
	ev := nodeEvents(ctx, t, c, "HairpinModeOff")[0]
	if ev.Type != corev1.EventTypeWarning || ev.Source.Host != c.NodeName || ev.InvolvedObject.Name != c.NodeName || !strings.Contains(ev.Message, port) {
		t.Errorf("event = %+v", ev)
	}

	// Restart: nothing flips, no duplicate event.
	trans := cond.LastTransitionTime
	agent.stop(t)
	agent = startAgent(t, c, bin)
	time.Sleep(12 * time.Second) // several check intervals and one heartbeat
	cond = condition(ctx, t, c, "NetworkConfigProblem")
	if cond.Status != corev1.ConditionTrue || !cond.LastTransitionTime.Equal(&trans) {
		t.Errorf("restart flipped the condition: %s (was since %s)", condString(cond), trans)
	}
	if evs := nodeEvents(ctx, t, c, "HairpinModeOff"); len(evs) != 1 || evs[0].Count != ev.Count {
		t.Errorf("restart duplicated the event: %d objects, count %d -> %d", len(evs), ev.Count, evs[0].Count)
	}

	// Fix it: the condition goes back to False.
	setHairpin(t, port, true)
	waitFor(t, "NetworkConfigProblem=False after the fix", 60*time.Second, func() (bool, string) {
		cond := condition(ctx, t, c, "NetworkConfigProblem")
		return cond != nil && cond.Status == corev1.ConditionFalse, condString(cond)
	})
	if cond := condition(ctx, t, c, "NetworkConfigProblem"); !cond.LastTransitionTime.After(trans.Time) {
		t.Errorf("transition time did not move on recovery: %s", condString(cond))
	}

	// A sysctl: forwarding off on the host (restored even if the test fails).
	orig, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile("/proc/sys/net/ipv4/ip_forward", orig, 0o644) })
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "NetworkConfigProblem=True IPForwardDisabled", 60*time.Second, func() (bool, string) {
		cond := condition(ctx, t, c, "NetworkConfigProblem")
		return cond != nil && cond.Status == corev1.ConditionTrue && cond.Reason == "IPForwardDisabled", condString(cond)
	})
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", orig, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "NetworkConfigProblem=False after ip_forward is back", 60*time.Second, func() (bool, string) {
		cond := condition(ctx, t, c, "NetworkConfigProblem")
		return cond != nil && cond.Status == corev1.ConditionFalse, condString(cond)
	})

	// A kernel line: an OOM kill in the real kernel log becomes a node Event
	// carrying the kernel's time.
	marker := fmt.Sprintf("nd-e2e-%d", time.Now().UnixNano()%1000000)
	line := fmt.Sprintf("<3>Out of memory: Killed process 4242 (%s) total-vm:1kB, anon-rss:1kB, file-rss:0kB\n", marker)
	if err := os.WriteFile("/dev/kmsg", []byte(line), 0o200); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an OOMKilling event naming "+marker, 60*time.Second, func() (bool, string) {
		for _, e := range nodeEvents(ctx, t, c, "OOMKilling") {
			if strings.Contains(e.Message, marker) {
				return true, e.Message
			}
		}
		return false, fmt.Sprintf("%d OOMKilling events", len(nodeEvents(ctx, t, c, "OOMKilling")))
	})

	// A crash-looping pod: one Event object on the pod whose count rises.
	if _, err := c.CreatePod(ctx, harness.PodOptions{Namespace: ns, Name: "crasher", Command: []string{"sleep", "a"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "CrashLoop event counted twice on the pod", 4*time.Minute, func() (bool, string) {
		evs, err := c.PodEvents(ctx, ns, "crasher")
		if err != nil {
			return false, err.Error()
		}
		var mine []corev1.Event
		for _, e := range evs {
			if e.Source.Component == "node-doctor" && e.Reason == "CrashLoop" {
				mine = append(mine, e)
			}
		}
		if len(mine) > 1 {
			t.Fatalf("crash loop made %d event objects, want one series", len(mine))
		}
		return len(mine) == 1 && mine[0].Count >= 2, fmt.Sprintf("%d events %v", len(mine), mine)
	})
	pod, err := c.Client.CoreV1().Pods(ns).Get(ctx, "crasher", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	evs, _ := c.PodEvents(ctx, ns, "crasher")
	for _, e := range evs {
		if e.Source.Component == "node-doctor" && e.InvolvedObject.UID != pod.UID {
			t.Errorf("pod event names UID %s, pod has %s", e.InvolvedObject.UID, pod.UID)
		}
	}

	// Disable the checks that drive it: the condition is removed.
	agent.stop(t)
	startAgent(t, c, bin, "--skip", strings.Join(checksDriving("NetworkConfigProblem"), ","))
	waitFor(t, "NetworkConfigProblem removed", 60*time.Second, func() (bool, string) {
		cond := condition(ctx, t, c, "NetworkConfigProblem")
		return cond == nil, condString(cond)
	})
	if ready := condition(ctx, t, c, "Ready"); ready == nil || ready.Status != corev1.ConditionTrue {
		t.Errorf("Ready after removal: %s", condString(ready))
	}
}

// TestKubeReportingAPIServerAway freezes kube-apiserver for a minute while
// a problem appears on the node: checks and metrics go on, and once the API
// server answers again the condition is written and the event arrives.
func TestKubeReportingAPIServerAway(t *testing.T) {
	harness.RequireRoot(t)
	bin := buildAgent(t)
	c := harness.StartT(t, harness.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	_, port := podOnBridge(ctx, t, c, "away")
	startAgent(t, c, bin)
	waitFor(t, "NetworkConfigProblem=False", 60*time.Second, func() (bool, string) {
		cond := condition(ctx, t, c, "NetworkConfigProblem")
		return cond != nil && cond.Status == corev1.ConditionFalse, condString(cond)
	})

	thaw, err := c.Freeze("kube-apiserver")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = thaw() })
	setHairpin(t, port, false)
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(port); err == nil {
			_ = netlink.LinkSetHairpin(l, true)
		}
	})
	time.Sleep(60 * time.Second) // several check runs and write attempts while it is away
	if err := thaw(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "condition written after the API server came back", 2*time.Minute, func() (bool, string) {
		cond := condition(ctx, t, c, "NetworkConfigProblem")
		return cond != nil && cond.Status == corev1.ConditionTrue && cond.Reason == "HairpinModeOff", condString(cond)
	})
	waitFor(t, "the event arrives", 2*time.Minute, func() (bool, string) {
		evs := nodeEvents(ctx, t, c, "HairpinModeOff")
		return len(evs) == 1, fmt.Sprintf("%d events", len(evs))
	})
}

// checksDriving names the registered checks that drive a condition type.
func checksDriving(condition string) []string {
	var out []string
	for _, d := range checks.All(checks.Deps{}) {
		if slices.Contains(d.ConditionTypes(), condition) {
			out = append(out, d.Name)
		}
	}
	return out
}
