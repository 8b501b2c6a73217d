//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/node-doctor/node-doctor/test/harness"
)

// TestNPDCustomPlugin runs an NPD custom plugin monitor under `node-doctor
// run` on the real node: its script says problem (exit 1) while a file in
// the test's directory exists. The condition goes True on the Node with the
// rule's reason and the script's output, the temporary rule gives a node
// Event, and once the script exits 0 the condition goes back to False with
// the file's healthy reason. Kubelet's Ready is untouched.
func TestNPDCustomPlugin(t *testing.T) {
	harness.RequireRoot(t)
	bin := buildAgent(t)
	c := harness.StartT(t, harness.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	dir := t.TempDir()
	flag := filepath.Join(dir, "broken")
	probe := filepath.Join(dir, "probe.sh")
	body := fmt.Sprintf("#!/bin/sh\nif [ -e %s ]; then echo \"e2e probe: $(cat %s)\"; exit 1; fi\necho e2e probe fine\nexit 0\n", flag, flag)
	if err := os.WriteFile(probe, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	const condType = "NodeDoctorE2EProbeProblem"
	monitor := filepath.Join(dir, "probe-monitor.json")
	mon := fmt.Sprintf(`{
  "plugin": "custom",
  "pluginConfig": {"invoke_interval": "1s", "timeout": "5s", "max_output_length": 80, "concurrency": 2},
  "source": "e2e-probe-monitor",
  "metricsReporting": true,
  "conditions": [{"type": %q, "reason": "ProbeIsFine", "message": "the e2e probe is fine"}],
  "rules": [
    {"type": "permanent", "condition": %q, "reason": "ProbeFailed", "path": %q, "timeout": "3s"},
    {"type": "temporary", "reason": "ProbeFailedEvent", "path": %q, "timeout": "3s"}
  ]
}`, condType, condType, probe, probe)
	if err := os.WriteFile(monitor, []byte(mon), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.yaml")
	conf := fmt.Sprintf("checks:\n  custom-plugin:\n    interval: 1s\n    timeout: 1s\n    monitors: [%s]\n", monitor)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	startPluginAgent(t, c, bin, cfg)

	waitFor(t, condType+"=False ProbeIsFine", 60*time.Second, func() (bool, string) {
		cond := condition(ctx, t, c, condType)
		return cond != nil && cond.Status == corev1.ConditionFalse && cond.Reason == "ProbeIsFine" && cond.Message == "the e2e probe is fine", condString(cond)
	})

	if err := os.WriteFile(flag, []byte("disk on fire"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, condType+"=True ProbeFailed", 30*time.Second, func() (bool, string) {
		cond := condition(ctx, t, c, condType)
		return cond != nil && cond.Status == corev1.ConditionTrue && cond.Reason == "ProbeFailed" && cond.Message == "e2e probe: disk on fire", condString(cond)
	})
	if ready := condition(ctx, t, c, "Ready"); ready == nil || ready.Status != corev1.ConditionTrue || ready.Reason != "KubeletReady" {
		t.Errorf("kubelet's Ready changed: %s", condString(ready))
	}
	waitFor(t, "a ProbeFailedEvent event on the node", 30*time.Second, func() (bool, string) {
		evs := nodeEvents(ctx, t, c, "ProbeFailedEvent")
		if len(evs) == 1 && evs[0].Type == corev1.EventTypeWarning && evs[0].Message == "e2e probe: disk on fire" {
			return true, ""
		}
		return false, fmt.Sprintf("%+v", evs)
	})

	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	waitFor(t, condType+"=False after the script exits 0", 30*time.Second, func() (bool, string) {
		cond := condition(ctx, t, c, condType)
		return cond != nil && cond.Status == corev1.ConditionFalse && cond.Reason == "ProbeIsFine" && cond.Message == "the e2e probe is fine", condString(cond)
	})
}

// startPluginAgent runs `node-doctor run` with cfg against the node,
// logging what it says of plugins and conditions.
func startPluginAgent(t *testing.T, c *harness.Cluster, bin, cfg string) *agentProc {
	t.Helper()
	return runReportingAgent(t, c, bin, cfg, func(line string) bool {
		return strings.Contains(line, "plugin") || strings.Contains(line, "condition")
	})
}
