//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/node-doctor/node-doctor/test/harness"
)

const (
	kubeletInterval = 3 * time.Second
	kubeletTimeout  = 3 * time.Second
	// kubeletGrace is the check's default grace.
	kubeletGrace = 10 * time.Second
)

// TestKubeletHealth runs the agent with the kubelet-health check on the
// harness node and stops the real kubelet (SIGSTOP), kills and restarts it
// at once (a restart: never reported), and kills it and leaves it dead for
// a while. Each is found within one interval of what the check waits for,
// drives the condition KubeletUnhealthy on the Node, and clears.
func TestKubeletHealth(t *testing.T) {
	harness.RequireRoot(t)
	bin := buildAgent(t)
	c := harness.StartT(t, harness.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	a := startMetricsAgent(t, bin, []string{"kubelet-health"}, kubeletInterval, kubeletTimeout, nil,
		"--kubeconfig", c.Kubeconfig, "--node-name", c.NodeName, "--only", "kubelet-health")
	a.waitStatus(t, "kubelet-health", "ok", 60*time.Second)
	condition := func(t *testing.T, want corev1.ConditionStatus) {
		t.Helper()
		start := time.Now()
		waitFor(t, "KubeletUnhealthy "+string(want), 30*time.Second, func() (bool, string) {
			cond, err := c.NodeCondition(ctx, "KubeletUnhealthy")
			if err != nil || cond == nil {
				return false, fmt.Sprint(cond, err)
			}
			return cond.Status == want, fmt.Sprintf("%s %s %s", cond.Status, cond.Reason, cond.Message)
		})
		t.Logf("Node condition KubeletUnhealthy=%s %s after it was due", want, time.Since(start).Round(100*time.Millisecond))
	}
	condition(t, corev1.ConditionFalse)
	bound := kubeletInterval + kubeletTimeout + scrapeSlack

	t.Run("stopped", func(t *testing.T) {
		if err := c.Signal("kubelet", syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		resumed := false
		t.Cleanup(func() {
			if !resumed {
				_ = c.Signal("kubelet", syscall.SIGCONT)
			}
		})
		start := time.Now()
		a.waitReason(t, "kubelet-health", "KubeletUnhealthy", bound)
		t.Logf("KubeletUnhealthy %s after SIGSTOP", time.Since(start).Round(100*time.Millisecond))
		condition(t, corev1.ConditionTrue)
		resumed = true
		if err := c.Signal("kubelet", syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		start = time.Now()
		a.waitStatus(t, "kubelet-health", "ok", bound)
		t.Logf("ok %s after SIGCONT", time.Since(start).Round(100*time.Millisecond))
		condition(t, corev1.ConditionFalse)
	})

	t.Run("restarted", func(t *testing.T) {
		restart, err := c.Kill(ctx, "kubelet")
		if err != nil {
			t.Fatal(err)
		}
		if err := restart(ctx); err != nil {
			t.Fatal(err)
		}
		// A restart is what a healthy node does: never a finding, while the
		// new kubelet starts, registers and answers.
		seen := map[string]int{}
		for end := time.Now().Add(45 * time.Second); time.Now().Before(end); time.Sleep(time.Second) {
			a.alive(t)
			s, m := a.status(t, "kubelet-health")
			seen[s]++
			if s != "ok" {
				t.Errorf("kubelet-health %s %v while the kubelet restarted", s, reasons(m, "kubelet-health"))
			}
		}
		t.Logf("kubelet-health across a restart: %v", seen)
	})

	t.Run("killed", func(t *testing.T) {
		a.waitStatus(t, "kubelet-health", "ok", 60*time.Second)
		restart, err := c.Kill(ctx, "kubelet")
		if err != nil {
			t.Fatal(err)
		}
		restarted := false
		t.Cleanup(func() {
			if !restarted {
				_ = restart(ctx)
			}
		})
		start := time.Now()
		a.waitReason(t, "kubelet-health", "KubeletNotRunning", kubeletGrace+bound)
		t.Logf("KubeletNotRunning %s after the kill", time.Since(start).Round(100*time.Millisecond))
		condition(t, corev1.ConditionTrue)
		restarted = true
		if err := restart(ctx); err != nil {
			t.Fatal(err)
		}
		start = time.Now()
		a.waitStatus(t, "kubelet-health", "ok", 60*time.Second)
		t.Logf("ok %s after the restart", time.Since(start).Round(100*time.Millisecond))
		condition(t, corev1.ConditionFalse)
	})
}
