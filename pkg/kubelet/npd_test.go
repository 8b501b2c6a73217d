package kubelet

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// NPD's health-checker configs as NPD ships them (vendored with its licence
// in pkg/kernel/testdata/npd-config).
func TestParseNPDHealthChecker(t *testing.T) {
	dir := filepath.Join("..", "kernel", "testdata", "npd-config")
	for file, want := range map[string]NPDHealthChecker{
		"health-checker-kubelet.json":    {Component: "kubelet", Service: "kubelet", EnableRepair: true, Cooldown: time.Minute, Timeout: 10 * time.Second, Interval: 10 * time.Second, Condition: "KubeletUnhealthy"},
		"health-checker-containerd.json": {Component: "cri", Service: "containerd", EnableRepair: true, Cooldown: 2 * time.Minute, Timeout: 60 * time.Second, Interval: 10 * time.Second, Condition: "ContainerRuntimeUnhealthy"},
	} {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		got, ok, err := ParseNPDHealthChecker(b)
		if !ok || err != nil || got != want {
			t.Errorf("%s: %+v %v %v\nwant %+v", file, got, ok, err, want)
		}
	}
	for _, file := range []string{"kernel-monitor.json", "custom-plugin-monitor.json"} {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok, err := ParseNPDHealthChecker(b); ok || err != nil {
			t.Errorf("%s: taken for a health-checker (%v)", file, err)
		}
	}
	bad := []byte(`{"plugin":"custom","rules":[{"path":"/home/kubernetes/bin/health-checker","args":["--cooldown-time=soon"]}]}`)
	if _, ok, err := ParseNPDHealthChecker(bad); !ok || err == nil {
		t.Errorf("bad cooldown: ok %v err %v", ok, err)
	}
	var s HealthSettings
	if err := s.ApplyNPD(NPDHealthChecker{Cooldown: time.Minute, Timeout: 10 * time.Second}); err != nil || s.Cooldown != time.Minute || s.HealthzTimeout != 10*time.Second {
		t.Errorf("ApplyNPD: %+v %v", s, err)
	}
}
