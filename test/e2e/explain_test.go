//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/node-doctor/node-doctor/pkg/cri"
	"github.com/node-doctor/node-doctor/pkg/kubeproxy"
)

// explain runs `node-doctor explain service REF -o format` and returns its
// stdout and exit code (0 path works, 1 broken; anything else fails t).
func (a dpAgent) explain(ctx context.Context, t *testing.T, ref, format string) ([]byte, int) {
	t.Helper()
	cmd := exec.CommandContext(ctx, a.bin, "explain", "service", ref, "-o", format, "--color", "never",
		"--kubeconfig", a.kubeconfig, "--node-name", a.node, "--config", a.config)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stdout.Bytes(), 0
	case errors.As(err, &ee) && ee.ExitCode() == 1:
		return stdout.Bytes(), 1
	}
	t.Fatalf("node-doctor explain service %s: %v\n%s%s", ref, err, stdout.String(), stderr.String())
	return nil, 0
}

// explainPath runs explain in JSON and in the table, and checks the exit
// code says broken exactly when a port has problems.
func (a dpAgent) explainPath(ctx context.Context, t *testing.T, ref string) *kubeproxy.ServicePath {
	t.Helper()
	out, code := a.explain(ctx, t, ref, "json")
	var p kubeproxy.ServicePath
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("explain json: %v\n%s", err, out)
	}
	if p.Broken() != (code == 1) {
		t.Errorf("explain exit %d but broken=%v", code, p.Broken())
	}
	table, tcode := a.explain(ctx, t, ref, "table")
	if tcode != code {
		t.Errorf("table exit %d, json exit %d", tcode, code)
	}
	t.Logf("node-doctor explain service %s (exit %d):\n%s", ref, code, table)
	return &p
}

// explainHealthy asserts every hop of ref is ok in mode and that the walk
// reaches each endpoint's DNAT.
func (a dpAgent) explainHealthy(ctx context.Context, t *testing.T, ref, mode string, podIPs []string) {
	t.Helper()
	p := a.explainPath(ctx, t, ref)
	if p.Mode != mode || p.Broken() || len(p.Ports) == 0 {
		t.Fatalf("healthy %s: mode %s broken %v ports %d: %+v", ref, p.Mode, p.Broken(), len(p.Ports), p)
	}
	for _, pp := range p.Ports {
		var dnat []string
		for _, h := range pp.Hops {
			if h.Status != kubeproxy.HopOK {
				t.Errorf("healthy %s: hop %+v", pp.Port, h)
			}
			if strings.Contains(h.Note, "DNAT to ") {
				dnat = append(dnat, h.Note)
			}
		}
		for _, ip := range podIPs {
			if !strings.Contains(strings.Join(dnat, ","), "DNAT to "+ip+":") {
				t.Errorf("%s: no DNAT hop to %s: %v", pp.Port, ip, dnat)
			}
		}
	}
}

// explainBroken asserts explain reports reason and a hop with status whose
// rule or note contains what.
func (a dpAgent) explainBroken(ctx context.Context, t *testing.T, ref, reason, status, what string) {
	t.Helper()
	p := a.explainPath(ctx, t, ref)
	if !p.Broken() {
		t.Fatalf("explain %s: not broken: %+v", ref, p)
	}
	var reasons []string
	hop := false
	for _, pp := range p.Ports {
		for _, pr := range pp.Problems {
			reasons = append(reasons, pr.Reason)
		}
		for _, h := range pp.Hops {
			if h.Status == status && strings.Contains(h.Rule+" "+h.Note, what) {
				hop = true
			}
		}
	}
	if !strings.Contains(strings.Join(reasons, ","), reason) || !hop {
		t.Errorf("explain %s: want %s and a %s hop with %q; got %v: %+v", ref, reason, status, what, reasons, p.Ports)
	}
}

// explainPod runs `node-doctor explain pod` against a runtime alone and
// returns the JSON and the exit code.
func explainPod(ctx context.Context, t *testing.T, bin, endpoint, pod string) (*cri.PodExplanation, int) {
	t.Helper()
	run := func(format string) ([]byte, int) {
		cmd := exec.CommandContext(ctx, bin, "explain", "pod", pod, "-o", format, "--color", "never", "--runtime-endpoint", endpoint)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return stdout.Bytes(), 0
		case errors.As(err, &ee) && ee.ExitCode() <= 2:
			return append(stdout.Bytes(), stderr.Bytes()...), ee.ExitCode()
		}
		t.Fatalf("node-doctor explain pod %s: %v\n%s", pod, err, stderr.String())
		return nil, 0
	}
	out, code := run("json")
	if code == 2 {
		return nil, code
	}
	var p cri.PodExplanation
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("explain pod json: %v\n%s", err, out)
	}
	table, tcode := run("table")
	if tcode != code {
		t.Errorf("explain pod %s: table exit %d, json exit %d", pod, tcode, code)
	}
	t.Logf("node-doctor explain pod %s (exit %d):\n%s", pod, code, table)
	return &p, code
}

// explainPods checks explain pod on TestCriRealContainerd's pods: the crash
// loop, the OOM-killed hog and the healthy one.
func explainPods(ctx context.Context, t *testing.T, bin, endpoint string) {
	hasFinding := func(p *cri.PodExplanation, reason string) bool {
		for _, f := range p.Findings {
			if f.Reason == reason {
				return true
			}
		}
		return false
	}
	p, code := explainPod(ctx, t, bin, endpoint, criNamespace+"/crash")
	if p == nil || code != 1 || len(p.Sandboxes) != 1 || !hasFinding(p, "CrashLoop") {
		t.Fatalf("explain crash: exit %d: %+v", code, p)
	}
	sb := p.Sandboxes[0]
	if sb.State != "READY" || sb.IP == "" {
		t.Errorf("crash sandbox: %+v", sb)
	}
	if c := sb.Containers[0]; c.Name != "app" || c.State != "EXITED" || c.ExitCode != 1 || c.Attempt != 2 || !strings.Contains(c.LastLines, "invalid number 'a'") {
		t.Errorf("crash newest container: %+v", c)
	}
	p, code = explainPod(ctx, t, bin, endpoint, criNamespace+"/oom")
	if p == nil || code != 1 || !hasFinding(p, "OOMKilled") {
		t.Fatalf("explain oom: exit %d: %+v", code, p)
	}
	if c := p.Sandboxes[0].Containers[0]; c.Name != "hog" || !c.OOMKilled || c.Reason != "OOMKilled" {
		t.Errorf("oom container: %+v", c)
	}
	p, code = explainPod(ctx, t, bin, endpoint, criNamespace+"/healthy")
	if p == nil || code != 0 {
		t.Fatalf("explain healthy: exit %d: %+v", code, p)
	}
	if c := p.Sandboxes[0].Containers[0]; c.State != "RUNNING" || c.Started.IsZero() {
		t.Errorf("healthy container: %+v", c)
	}
	if _, code := explainPod(ctx, t, bin, endpoint, criNamespace+"/no-such-pod"); code != 2 {
		t.Errorf("explain of a pod not on the node: exit %d, want 2", code)
	}
}
