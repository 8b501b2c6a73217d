//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/node-doctor/node-doctor/test/harness"
)

// TestContainerdAlone starts containerd without Kubernetes, as the CRI
// checks' tests do, and checks CRI status and the local images.
func TestContainerdAlone(t *testing.T) {
	c := harness.StartContainerdT(t, harness.ContainerdOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := harness.DialCRI(ctx, c.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := runtimeapi.NewRuntimeServiceClient(conn).Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatalf("cri status: %v", err)
	}
	for _, cond := range st.GetStatus().GetConditions() {
		if !cond.Status {
			t.Errorf("CRI condition %s is false: %s %s", cond.Type, cond.Reason, cond.Message)
		}
	}
	imgs, err := runtimeapi.NewImageServiceClient(conn).ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatalf("cri list images: %v", err)
	}
	have := map[string]bool{}
	for _, img := range imgs.Images {
		for _, tag := range img.RepoTags {
			have[tag] = true
		}
	}
	for _, want := range []string{harness.PauseImage, harness.BusyboxImage} {
		if !have[want] {
			t.Errorf("image %s not listed by CRI (have %v)", want, have)
		}
	}
}

// TestSmoke brings the node up in each kube-proxy mode, serves a healthy
// pod pair behind a ClusterIP Service, checks kube-proxy programmed it and
// that it answers, then runs node-doctor against the node.
func TestSmoke(t *testing.T) {
	harness.RequireRoot(t)
	agent := buildAgent(t)
	for _, mode := range []string{"iptables", "nftables"} {
		t.Run(mode, func(t *testing.T) { smoke(t, mode, agent) })
	}
}

func smoke(t *testing.T, mode, agent string) {
	c := harness.StartT(t, harness.Options{ProxyMode: mode})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	ns, err := c.CreateNamespace(ctx, "smoke")
	if err != nil {
		t.Fatal(err)
	}
	web, err := c.CreateServiceWithEndpoints(ctx, ns, "web", 2)
	if err != nil {
		t.Fatal(err)
	}
	clusterIP := web.Service.Spec.ClusterIP
	t.Logf("service %s/web at %s:80 with pods %s, %s", ns, clusterIP, web.Pods[0].Status.PodIP, web.Pods[1].Status.PodIP)

	podIPs := []string{web.Pods[0].Status.PodIP, web.Pods[1].Status.PodIP}
	// kube-proxy must have programmed the Service before any traffic is
	// sent to the ClusterIP.
	var why string
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		ok, w, err := c.ServiceProgrammed(ctx, ns, "web", "http", clusterIP, podIPs)
		why = w
		if err != nil {
			why = err.Error()
		}
		return ok, nil
	})
	if err != nil {
		rules, _ := c.ProxyRules(ctx)
		t.Fatalf("kube-proxy (%s) did not program %s/web: %s\nrules:\n%s", mode, ns, why, rules)
	}

	// A client pod fetches through the ClusterIP until it gets an answer.
	// (busybox wget -T segfaults in Debian's static build: use timeout.)
	if _, err := c.CreatePod(ctx, harness.PodOptions{
		Namespace: ns, Name: "client", RestartPolicy: corev1.RestartPolicyNever,
		Command: []string{"/bin/sh", "-c", "for i in $(seq 30); do timeout 3 wget -q -O - http://" + clusterIP +
			"/ && exit 0; sleep 1; done; exit 1"},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitForPod(ctx, ns, "client", 90*time.Second, harness.PodPhase(corev1.PodSucceeded)); err != nil {
		t.Fatalf("client could not reach %s through the ClusterIP: %v", clusterIP, err)
	}
	if logs, err := c.Client.CoreV1().Pods(ns).GetLogs("client", &corev1.PodLogOptions{}).DoRaw(ctx); err == nil {
		if got := strings.TrimSpace(string(logs)); !strings.HasPrefix(got, "web-") {
			t.Errorf("client got %q from the ClusterIP, want a web-N pod name", got)
		}
	} else {
		t.Logf("client logs unavailable: %v", err)
	}

	hairpin(ctx, t, c, ns)

	desc, err := c.DescribeNode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, cond := range desc.Node.Status.Conditions {
		t.Logf("node condition %s=%s (%s)", cond.Type, cond.Status, cond.Reason)
	}

	runAgent(ctx, t, c, agent)
}

// hairpin checks a pod reaches itself through its own Service: the
// bridge must send the DNATed packet back out the port it came in on.
func hairpin(ctx context.Context, t *testing.T, c *harness.Cluster, ns string) {
	t.Helper()
	// The Service exists first so the pod gets HAIRPIN_SERVICE_HOST.
	if _, err := c.CreateService(ctx, ns, "hairpin", map[string]string{"app": "hairpin"}, 80, 8080); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreatePod(ctx, harness.PodOptions{
		Namespace: ns, Name: "hairpin", Labels: map[string]string{"app": "hairpin"}, Port: 8080,
		RestartPolicy: corev1.RestartPolicyNever,
		Command: []string{"/bin/sh", "-c", "mkdir -p /www && echo hairpin > /www/index.html && httpd -p 8080 -h /www && " +
			"for i in $(seq 60); do timeout 3 wget -q -O - http://$HAIRPIN_SERVICE_HOST/ && exit 0; sleep 1; done; exit 1"},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitForPod(ctx, ns, "hairpin", 90*time.Second, harness.PodPhase(corev1.PodSucceeded)); err != nil {
		t.Fatalf("pod could not reach itself through its Service (hairpin): %v", err)
	}
}

// report mirrors the part of `node-doctor check -o json` the test reads.
type report struct {
	Node    string         `json:"node"`
	Summary map[string]int `json:"summary"`
	Results []struct {
		Check    string `json:"check"`
		Area     string `json:"area"`
		Status   string `json:"status"`
		Findings []struct {
			Severity string `json:"severity"`
			Reason   string `json:"reason"`
			Message  string `json:"message"`
		} `json:"findings"`
	} `json:"results"`
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// buildAgent builds ./cmd/agent once for all modes.
func buildAgent(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	if _, err := os.Stat(filepath.Join(root, "cmd", "agent")); err != nil {
		t.Fatalf("node-doctor agent package ./cmd/agent is missing: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "node-doctor")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/agent")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/agent: %v\n%s", err, out)
	}
	return bin
}

// runAgent runs `node-doctor check -o json` on the node and requires that
// every check ran: problems this machine really has are logged, not failed.
func runAgent(ctx context.Context, t *testing.T, c *harness.Cluster, bin string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, "check", "-o", "json")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig, "NODE_NAME="+c.NodeName)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run node-doctor: %v", err)
	}
	t.Logf("node-doctor check exit %d; report:\n%s", code, stdout.String())
	if stderr.Len() > 0 {
		t.Logf("node-doctor stderr:\n%s", stderr.String())
	}
	if code == 2 {
		t.Fatalf("node-doctor check failed itself (exit 2)")
	}
	var rep report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("parse node-doctor JSON report: %v", err)
	}
	if len(rep.Results) == 0 {
		t.Fatalf("node-doctor ran no checks")
	}
	for _, r := range rep.Results {
		if r.Status == "error" {
			t.Errorf("check %s (%s) could not run: %+v", r.Check, r.Area, r.Findings)
		}
		for _, f := range r.Findings {
			if f.Severity == "problem" || f.Severity == "warning" {
				t.Logf("node-doctor %s on this node: %s %s: %s", f.Severity, r.Check, f.Reason, f.Message)
			}
		}
	}
	t.Logf("node-doctor summary: %v", rep.Summary)
}
