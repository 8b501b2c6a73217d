package plugin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseMonitorDefaults(t *testing.T) {
	m, err := ParseMonitor("/etc/npd/probe.json", []byte(`{"plugin":"custom","rules":[{"type":"temporary","reason":"R","path":"/bin/true","invoke_interval":"2m"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.Source != "probe" || m.InvokeInterval != DefaultInvokeInterval || m.Timeout != DefaultTimeout || m.MaxOutputLength != 80 || m.Concurrency != 3 ||
		m.Rules[0].Timeout != DefaultTimeout || m.Rules[0].Interval.String() != "2m0s" {
		t.Errorf("defaults: %+v %+v", m, m.Rules[0])
	}
}

// TestParseMonitorErrors: each mistake is named in NPD's terms.
func TestParseMonitorErrors(t *testing.T) {
	rule := func(s string) string {
		return `{"plugin":"custom","conditions":[{"type":"P","reason":"PIsFine"}],"rules":[` + s + `]}`
	}
	for body, want := range map[string]string{
		`{"plugin":"custom","pluginConfig":{"invoke_interval":"30"}}`:                         `pluginConfig.invoke_interval "30": not a duration`,
		`{"plugin":"custom","pluginConfig":{"invoke_interval":"10ms"}}`:                       `pluginConfig.invoke_interval "10ms": must be at least 1s`,
		`{"plugin":"custom","pluginConfig":{"timeout":"0s"}}`:                                 `pluginConfig.timeout "0s": must be more than 0`,
		`{"plugin":"custom","pluginConfig":{"concurrency":0}}`:                                `pluginConfig.concurrency 0: must be at least 1`,
		`{"plugin":"custom","pluginConfig":{"max_output_length":-1}}`:                         `pluginConfig.max_output_length -1: must not be negative`,
		"{\"plugin\":\"custom\",\n\"pluginConfig\":{\"concurrency\":\"3\"}}":                  `line 2, column 34: pluginConfig.concurrency: want a whole number, got a JSON string`,
		`{"plugin":"custom","pluginConfig":{"invoke_intervl":"1m"}}`:                          `unknown field "invoke_intervl": not a field of NPD's custom plugin monitor config`,
		`{"plugin":"custom","conditions":[{"type":"Ready","reason":"X"}]}`:                    `conditions[0]: type Ready is kubelet's own condition`,
		rule(`{"type":"permanent","condition":"Q","reason":"QBad","path":"/bin/true"}`):       `rules[0] (QBad): condition "Q" is not in the file's conditions`,
		rule(`{"type":"temprary","reason":"X","path":"/bin/true"}`):                           `rules[0] (X): type "temprary" is not temporary or permanent`,
		rule(`{"type":"temporary","reason":"X"}`):                                             `rules[0] (X): path is empty`,
		rule(`{"type":"temporary","reason":"X","path":"/bin/true","timeout":"10s"}`):          `rules[0] (X): timeout 10s is longer than pluginConfig.timeout 5s`,
		rule(`{"type":"temporary","reason":"X","path":"/bin/true","invoke_interval":"soon"}`): `rules[0] (X): invoke_interval "soon": not a duration`,
		`{"plugin":"kmsg","rules":[]}`:                                                        `refused: plugin "kmsg": not a custom plugin monitor`,
		`{"plugin":"custom","rules":[{"type":"permanent","condition":"KubeletUnhealthy","reason":"KubeletUnhealthy","path":"/home/kubernetes/bin/health-checker","args":["--component=kubelet"]}]}`: "refused: NPD's health-checker for kubelet",
	} {
		_, err := ParseMonitor("m.json", []byte(body))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "custom plugin monitor m.json: ") {
			t.Errorf("%s:\n  got  %v\n  want %q", body, err, want)
		}
	}
	// Every problem at once.
	_, err := ParseMonitor("m.json", []byte(`{"plugin":"custom","pluginConfig":{"concurrency":0,"timeout":"x"},"rules":[{"type":"t","reason":"A","path":"/bin/true"}]}`))
	if err == nil || strings.Count(err.Error(), "\n") != 2 {
		t.Errorf("want three errors, got %v", err)
	}
}

// TestLoadMonitorScripts: a missing or non-executable script is an error
// when the file is loaded, naming the rule and the path.
func TestLoadMonitorScripts(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain.sh")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		filepath.Join(dir, "missing.sh"): "rules[0] (X): path: stat " + filepath.Join(dir, "missing.sh") + ": no such file or directory",
		"./config/plugin/missing.sh":     "a relative path is resolved from the agent's working directory",
		plain:                            plain + " is not executable (mode -rw-r--r--)",
		dir:                              "is not a regular file",
	} {
		file := filepath.Join(t.TempDir(), "m.json")
		body := `{"plugin":"custom","rules":[{"type":"temporary","reason":"X","path":"` + path + `"}]}`
		if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadMonitor(file); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", path, err, want)
		}
	}
}
