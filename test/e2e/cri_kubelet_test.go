//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/test/harness"
)

// TestCriKubeletNode creates the classic broken pods through the Kubernetes
// API on a real node (kubelet restarts them, pulls, OOM-kills) and asserts
// that the runtime checks name each pod — with the UID the API gave it.
func TestCriKubeletNode(t *testing.T) {
	harness.RequireRoot(t)
	waitForFreeHarness(t, 15*time.Minute)
	c := harness.StartT(t, harness.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ns, err := c.CreateNamespace(ctx, "cri")
	if err != nil {
		t.Fatal(err)
	}
	pods := []struct {
		opts  harness.PodOptions
		memMi int64
	}{
		{opts: harness.PodOptions{Name: "crash", Command: []string{"sleep", "a"}}},
		{opts: harness.PodOptions{Name: "exit-zero", Command: []string{"sh", "-c", "echo 'daemon started'; (sleep 3600 &); exit 0"}}},
		{opts: harness.PodOptions{Name: "oom", Command: []string{"dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"}}, memMi: 16},
		// localhost: the pull fails on loopback, nothing leaves the machine.
		{opts: harness.PodOptions{Name: "missing-image", Image: "localhost/node-doctor/does-not-exist:e2e"}},
		{opts: harness.PodOptions{Name: "healthy"}},
	}
	uids := map[string]types.UID{}
	for _, p := range pods {
		p.opts.Namespace = ns
		spec := c.PodSpec(p.opts)
		if p.memMi > 0 {
			q := *resource.NewQuantity(p.memMi<<20, resource.BinarySI)
			spec.Spec.Containers[0].Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: q}, Requests: corev1.ResourceList{corev1.ResourceMemory: q}}
		}
		created, err := c.Client.CoreV1().Pods(ns).Create(ctx, spec, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		uids[p.opts.Name] = created.UID
	}

	src, defs := criChecks(c.CRIEndpoint)
	expect := []struct{ check, reason, pod string }{
		{"cri-crash-loop", "CrashLoop", "crash"},
		{"cri-restart-loop", "StartBackgroundMistake", "exit-zero"},
		{"cri-oom-killed", "OOMKilled", "oom"},
		{"cri-sandboxes", "SandboxWithoutContainers", "missing-image"},
	}
	// kubelet's back-off is 10s, 20s, 40s: two restarts take about a minute.
	start := time.Now()
	var got map[string][]check.Finding
	for {
		got = runCriChecks(ctx, t, src, defs)
		missing := 0
		for _, e := range expect {
			if findFinding(got[e.check], e.reason, e.pod) == nil {
				missing++
			}
		}
		if missing == 0 || time.Since(start) > 4*time.Minute {
			break
		}
		time.Sleep(5 * time.Second)
	}
	t.Logf("findings after %s", time.Since(start).Round(time.Second))
	for _, e := range expect {
		f := findFinding(got[e.check], e.reason, e.pod)
		if f == nil {
			t.Errorf("%s: no %s finding for pod %s; got %s", e.check, e.reason, e.pod, describe(got[e.check]))
			continue
		}
		if f.Object.Namespace != ns || f.Object.UID != string(uids[e.pod]) || (e.check != "cri-sandboxes" && f.Object.Container != "main") {
			t.Errorf("%s %s: object %+v, want pod %s/%s uid %s container main", e.check, e.reason, f.Object, ns, e.pod, uids[e.pod])
		}
		t.Logf("%s %s %s: %s", f.Severity, e.check, f.Object, f.Message)
	}
	if f := findFinding(got["cri-crash-loop"], "CrashLoop", "crash"); f != nil && !strings.Contains(f.Details["log_tail"], "invalid number 'a'") {
		t.Errorf("crash loop log tail from %s: %q", f.Details["log_path"], f.Details["log_tail"])
	}
	for name, fs := range got {
		for _, f := range fs {
			if f.Object.Name == "healthy" && f.Severity != check.SeverityOK {
				t.Errorf("%s flags the healthy pod: %s %s", name, f.Reason, f.Message)
			}
			if f.Object.IsNode() && f.Severity == check.SeverityProblem {
				t.Errorf("%s on a healthy runtime: %s %s", name, f.Reason, f.Message)
			}
		}
	}
}
