//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/cri"
	"github.com/node-doctor/node-doctor/pkg/kube"
	"github.com/node-doctor/node-doctor/pkg/kube/kubetest"
	"github.com/node-doctor/node-doctor/test/harness"
)

// churnChecks are the checks a pod's life can trip, as an operator on a
// busy node would tune them: notReadyAfter and the stuck threshold at 1s,
// so a pod that ran for a few seconds is already "old" to them.
const churnChecks = "cri-crash-loop,cri-restart-loop,cri-oom-killed,cri-sandboxes,cri-stuck-containers"

// TestCRIPodDeletionQuiet is issue #18: a pod that has run for a while is
// deleted normally (kubectl delete, default grace) and kubelet stops its
// containers, removes them, stops and removes its sandbox. Every second of
// that, the runtime checks — as the agent runs them (one Source across
// rounds, this node's pods from the API) and as one-shot `node-doctor
// check -o json` runs with and without a cluster — must say nothing about
// the pod.
func TestCRIPodDeletionQuiet(t *testing.T) {
	harness.RequireRoot(t)
	waitForFreeHarness(t, 15*time.Minute)
	c := harness.StartT(t, harness.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ns, err := c.CreateNamespace(ctx, "churn")
	if err != nil {
		t.Fatal(err)
	}
	spec := c.PodSpec(harness.PodOptions{Namespace: ns, Name: "victim"})
	spec.Spec.TerminationGracePeriodSeconds = nil // the API's default, 30s: a normal delete
	pod, err := c.Client.CoreV1().Pods(ns).Create(ctx, spec, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitForPod(ctx, ns, pod.Name, 90*time.Second, harness.PodRunningReady); err != nil {
		t.Fatal(err)
	}

	inf := kube.NewInformers()
	inf.Connect(kubetest.Adapt(c.Client), c.NodeName, 0)
	ictx, stopInformers := context.WithCancel(ctx)
	defer stopInformers()
	if err := inf.Start(ictx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	src, defs := churnAgentChecks(c.CRIEndpoint, inf)
	bin := buildAgent(t)
	cfg := filepath.Join(t.TempDir(), "node-doctor.yaml")
	if err := os.WriteFile(cfg, []byte("checks:\n  cri-sandboxes: {notReadyAfter: 1s, emptyAfter: 1s}\n  cri-stuck-containers: {after: 1s}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conn, err := harness.DialCRI(ctx, c.CRIEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rs := runtimeapi.NewRuntimeServiceClient(conn)

	modes := []struct {
		name string
		run  func() []churnFinding
	}{
		{"agent", func() []churnFinding { return agentFindings(ctx, t, src, defs) }},
		{"check with the API", func() []churnFinding {
			return oneShotFindings(ctx, t, bin, "--config", cfg, "--runtime-endpoint", c.CRIEndpoint, "--kubeconfig", c.Kubeconfig, "--node-name", c.NodeName)
		}},
		{"check without a cluster", func() []churnFinding {
			return oneShotFindings(ctx, t, bin, "--config", cfg, "--runtime-endpoint", c.CRIEndpoint)
		}},
	}
	quiet := func(phase string) {
		t.Helper()
		for _, m := range modes {
			for _, f := range m.run() {
				if f.Object.Namespace == ns && f.Object.Name == pod.Name && f.Severity != check.SeverityOK {
					t.Errorf("%s, %s: %s %s %s: %s", phase, m.name, f.Severity, f.Check, f.Reason, f.Message)
				}
			}
		}
	}

	// Running for a few seconds: already older than notReadyAfter, the
	// clock the old code started at the sandbox's creation.
	for time.Since(pod.CreationTimestamp.Time) < 5*time.Second {
		quiet("running")
		time.Sleep(time.Second)
	}
	quiet("running")
	if out, err := exec.CommandContext(ctx, "kubectl", "--kubeconfig", c.Kubeconfig, "delete", "pod", "-n", ns, pod.Name, "--wait=false").CombinedOutput(); err != nil {
		t.Fatalf("kubectl delete: %v: %s", err, out)
	}
	deleted := time.Now()
	var seen []string
	for {
		state := criPodState(ctx, t, rs, string(pod.UID))
		if len(seen) == 0 || seen[len(seen)-1] != state {
			t.Logf("%5.1fs after delete: %s", time.Since(deleted).Seconds(), state)
			seen = append(seen, state)
		}
		if state == "gone" {
			break
		}
		quiet(fmt.Sprintf("%.0fs after delete (%s)", time.Since(deleted).Seconds(), state))
		if time.Since(deleted) > 2*time.Minute {
			t.Fatalf("kubelet did not remove the sandbox within 2 minutes: %v\n%s", seen, c.LogTails(30))
		}
		time.Sleep(time.Second)
	}
	// The test is only worth something if it watched the sandbox stopped.
	if !strings.Contains(strings.Join(seen, "|"), "sandbox NotReady") {
		t.Errorf("never saw the pod's sandbox NotReady before it was removed: %v", seen)
	}
}

// churnAgentChecks are the runtime checks as the agent builds them: one
// Source kept across rounds and the pods informer.
func churnAgentChecks(endpoint string, pods cri.Pods) (*cri.Source, []check.Definition) {
	client := cri.NewClient(cri.ClientOptions{
		Endpoints: cri.EndpointOptions{RuntimeEndpoint: endpoint, HostFS: os.DirFS("/")},
		Dial:      cri.UnixDialer("/"),
		Timeout:   2 * time.Second,
	})
	src := cri.NewSource(client, cri.SourceOptions{MaxAge: time.Millisecond})
	defs := []check.Definition{
		cri.CrashLoopCheck(src, os.DirFS("/"), pods), cri.RestartLoopCheck(src, pods), cri.OOMKilledCheck(src),
		cri.SandboxCheck(src, pods), cri.StuckCheck(src),
	}
	for _, d := range defs {
		switch s := d.Settings.(type) {
		case *cri.SandboxSettings:
			s.NotReadyAfter, s.EmptyAfter = time.Second, time.Second
		case *cri.StuckSettings:
			s.After = time.Second
		}
	}
	return src, defs
}

type churnFinding struct {
	Check    string
	Severity check.Severity `json:"severity"`
	Reason   string         `json:"reason"`
	Message  string         `json:"message"`
	Object   check.Object   `json:"object"`
}

func agentFindings(ctx context.Context, t *testing.T, src *cri.Source, defs []check.Definition) []churnFinding {
	t.Helper()
	var out []churnFinding
	for name, fs := range runCriChecks(ctx, t, src, defs) {
		for _, f := range fs {
			out = append(out, churnFinding{Check: name, Severity: f.Severity, Reason: f.Reason, Message: f.Message, Object: f.Object})
		}
	}
	return out
}

// oneShotFindings runs `node-doctor check -o json` on the churn checks.
func oneShotFindings(ctx context.Context, t *testing.T, bin string, args ...string) []churnFinding {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, append([]string{"check", "-o", "json", "--only", churnChecks}, args...)...)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "KUBECONFIG=") && !strings.HasPrefix(e, "KUBERNETES_SERVICE_HOST=") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
		t.Fatalf("node-doctor check: %v\n%s", err, stderr.String())
	}
	var rep struct {
		Results []struct {
			Check    string         `json:"check"`
			Findings []churnFinding `json:"findings"`
		} `json:"results"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("node-doctor check -o json: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	var out []churnFinding
	for _, r := range rep.Results {
		for _, f := range r.Findings {
			f.Check = r.Check
			out = append(out, f)
		}
	}
	return out
}

// criPodState says what the runtime has of the pod with this UID.
func criPodState(ctx context.Context, t *testing.T, rs runtimeapi.RuntimeServiceClient, uid string) string {
	t.Helper()
	sel := map[string]string{cri.LabelPodUID: uid}
	sbs, err := rs.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: sel}})
	if err != nil {
		t.Fatalf("list sandboxes: %v", err)
	}
	cs, err := rs.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{LabelSelector: sel}})
	if err != nil {
		t.Fatalf("list containers: %v", err)
	}
	if len(sbs.GetItems()) == 0 && len(cs.GetContainers()) == 0 {
		return "gone"
	}
	var parts []string
	for _, sb := range sbs.GetItems() {
		st := "Ready"
		if sb.GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
			st = "NotReady"
		}
		parts = append(parts, "sandbox "+st)
	}
	for _, c := range cs.GetContainers() {
		parts = append(parts, "container "+strings.ToLower(strings.TrimPrefix(c.GetState().String(), "CONTAINER_")))
	}
	return strings.Join(parts, ", ")
}
