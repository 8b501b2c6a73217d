package cri

import (
	"strings"
	"testing"
	"time"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/config"
)

func TestSettingsFromConfigFile(t *testing.T) {
	load := func(doc string) ([]check.Definition, error) {
		defs := allChecks(staticSource{}, nil)
		ptrs := make([]*check.Definition, len(defs))
		for i := range defs {
			ptrs[i] = &defs[i]
		}
		_, err := config.Load([]byte(doc), ptrs)
		return defs, err
	}
	defs, err := load(`
checks:
  cri-crash-loop: {minRestarts: 5, window: 20m}
  cri-oom-killed: {window: 2h}
  cri-sandboxes: {notReadyAfter: 30s, emptyAfter: 5m}
  cri-stuck-containers: {after: 10m, interval: 1m, timeout: 50s}
`)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]check.Definition{}
	for _, d := range defs {
		byName[d.Name] = d
	}
	if s := byName["cri-crash-loop"].Settings.(*LoopSettings); s.MinRestarts != 5 || s.Window != 20*time.Minute {
		t.Errorf("crash loop %+v", s)
	}
	if s := byName["cri-restart-loop"].Settings.(*LoopSettings); s.MinRestarts != 2 {
		t.Errorf("restart loop shares settings with crash loop: %+v", s)
	}
	if s := byName["cri-sandboxes"].Settings.(*SandboxSettings); s.NotReadyAfter != 30*time.Second || s.EmptyAfter != 5*time.Minute {
		t.Errorf("sandboxes %+v", s)
	}
	if d := byName["cri-stuck-containers"]; d.Settings.(*StuckSettings).After != 10*time.Minute || d.Interval != time.Minute {
		t.Errorf("stuck %+v %s", d.Settings, d.Interval)
	}
	for doc, want := range map[string]string{
		"checks: {cri-crash-loop: {minRestarts: 0}}":  "minRestarts: must be at least 1",
		"checks: {cri-oom-killed: {window: 0s}}":      "window: must be positive",
		"checks: {cri-sandboxes: {emptyAfter: soon}}": "into time.Duration",
		"checks: {cri-sandboxes: {emptyafter: 1m}}":   "unknown key",
	} {
		if _, err := load(doc); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", doc, err, want)
		}
	}
}
