package config

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/node-doctor/node-doctor/pkg/check"
)

type testSettings struct {
	Bridges []string `yaml:"bridges"`
	Mode    string   `yaml:"mode"`
	Limit   int      `yaml:"limit"`
}

func (s *testSettings) Validate() error {
	if s.Limit < 0 || s.Limit > 100 {
		return &rangeErr{}
	}
	return nil
}

type rangeErr struct{}

func (*rangeErr) Error() string { return "limit: must be between 0 and 100" }

func testDefs() []*check.Definition {
	noop := check.Func(func(context.Context) ([]check.Finding, error) { return nil, nil })
	return []*check.Definition{
		{Name: "alpha", Interval: time.Minute, Timeout: 10 * time.Second, Settings: &testSettings{Mode: "auto"}, Check: noop},
		{Name: "beta", Interval: time.Minute, Timeout: 10 * time.Second, Check: noop},
	}
}

func TestLoadEmpty(t *testing.T) {
	for _, doc := range []string{"", "\n", "# only a comment\n", "---\n", "null\n", "checks:\n", "checks:\n  alpha:\n"} {
		c, err := Load([]byte(doc), testDefs())
		if err != nil {
			t.Errorf("%q: %v", doc, err)
			continue
		}
		if c.HostRoot != "/" || c.MetricsAddress != DefaultMetricsAddress {
			t.Errorf("%q: defaults not applied: %+v", doc, c)
		}
	}
}

func TestLoadApplies(t *testing.T) {
	defs := testDefs()
	c, err := Load([]byte(`
hostRoot: /host
metricsAddress: 127.0.0.1:9999
metricsSecure: True
healthAddress: 127.0.0.1:9998
metricsCertFile: /etc/tls/tls.crt
metricsKeyFile: /etc/tls/tls.key
logLevel: debug
kubeconfig: /etc/kubernetes/node-doctor.conf
nodeName: worker-1
conditionHeartbeat: 1m
dataplane:
  reader: exec
checks:
  alpha:
    interval: 30s
    timeout: 2s
    bridges: [cni0, br1]
    limit: 7
  beta:
    enabled: False
`), defs)
	if err != nil {
		t.Fatal(err)
	}
	if c.HostRoot != "/host" || c.MetricsAddress != "127.0.0.1:9999" || c.LogLevel != "debug" ||
		c.Kubeconfig != "/etc/kubernetes/node-doctor.conf" || c.NodeName != "worker-1" || c.ConditionHeartbeat != time.Minute || c.DataplaneReader != ReaderExec {
		t.Errorf("top level not applied: %+v", c)
	}
	if !c.MetricsSecure || c.HealthAddress != "127.0.0.1:9998" || c.MetricsCertFile != "/etc/tls/tls.crt" || c.MetricsKeyFile != "/etc/tls/tls.key" {
		t.Errorf("secure metrics settings not applied: %+v", c)
	}
	a := defs[0]
	if a.Interval != 30*time.Second || a.Timeout != 2*time.Second {
		t.Errorf("alpha interval/timeout = %s/%s", a.Interval, a.Timeout)
	}
	s := a.Settings.(*testSettings)
	if strings.Join(s.Bridges, ",") != "cni0,br1" || s.Limit != 7 || s.Mode != "auto" {
		t.Errorf("alpha settings = %+v (defaults must survive)", s)
	}
	if !c.Disabled["beta"] || c.Disabled["alpha"] {
		t.Errorf("disabled = %v", c.Disabled)
	}
}

func TestLoadRejects(t *testing.T) {
	cases := map[string]struct{ doc, want string }{
		"syntax":            {"checks: [", "yaml:"},
		"not a mapping":     {"- a\n- b\n", "the document (line 1): must be a mapping"},
		"unknown top key":   {"hostroot: /x\n", "hostroot (line 1): unknown key; known keys: hostRoot,"},
		"wrong type":        {"hostRoot: [a]\n", "hostRoot (line 1): must be a string"},
		"number not string": {"logLevel: 3\n", "logLevel (line 1): must be a string"},
		"bad level":         {"logLevel: loud\n", `logLevel: "loud" is not one of debug, info, warn, error`},
		"bad format":        {"logFormat: xml\n", `logFormat: "xml" is not one of text, json`},
		"bad address":       {"metricsAddress: localhost\n", `metricsAddress: "localhost" is not host:port`},
		"bad port":          {"metricsAddress: \":99999\"\n", `metricsAddress: port "99999"`},
		"secure not bool":   {"metricsSecure: \"yes\"\n", "metricsSecure (line 1): must be true or false"},
		"bad health addr":   {"healthAddress: nowhere\n", `healthAddress: "nowhere" is not host:port`},
		"cert without key":  {"metricsSecure: true\nmetricsCertFile: /a\n", "metricsCertFile, metricsKeyFile: give both or neither"},
		"cert not secure":   {"metricsCertFile: /a\nmetricsKeyFile: /b\n", "metricsCertFile: only used with metricsSecure: true"},
		"empty root":        {"hostRoot: \"\"\n", "hostRoot: must not be empty"},
		"heartbeat range":   {"conditionHeartbeat: 1s\n", "conditionHeartbeat: 1s is out of range 10s to 1h"},
		"dataplane reader":  {"dataplane:\n  reader: nft\n", `dataplane.reader: "nft" is not one of netlink, exec`},
		"dataplane key":     {"dataplane:\n  readr: exec\n", "dataplane.readr (line 2): unknown key; known keys: reader"},
		"heartbeat type":    {"conditionHeartbeat: soon\n", `conditionHeartbeat (line 1): "soon" is not a duration`},
		"duplicate":         {"logLevel: info\nlogLevel: debug\n", "logLevel (line 2): duplicate key"},
		"checks not map":    {"checks: [alpha]\n", "checks (line 1): must be a mapping"},
		"unknown check":     {"checks:\n  gamma: {}\n", "checks.gamma (line 2): unknown check; known checks: alpha, beta"},
		"check not map":     {"checks:\n  alpha: yes\n", "checks.alpha (line 2): must be a mapping"},
		"unknown check key": {"checks:\n  alpha:\n    bridgez: [x]\n", "checks.alpha.bridgez (line 3): unknown key; known keys: enabled, interval, timeout, bridges, mode, limit"},
		"no settings keys":  {"checks:\n  beta:\n    limit: 3\n", "checks.beta.limit (line 3): unknown key; known keys: enabled, interval, timeout"},
		"enabled not bool":  {"checks:\n  alpha:\n    enabled: \"no\"\n", "checks.alpha.enabled (line 3): must be true or false"},
		"bad interval":      {"checks:\n  alpha:\n    interval: 5\n", `checks.alpha.interval (line 3): "5" is not a duration`},
		"interval too low":  {"checks:\n  alpha:\n    interval: 10ms\n    timeout: 1ms\n", "checks.alpha.interval (line 3): 10ms is out of range 1s to 24h0m0s"},
		"interval too high": {"checks:\n  alpha:\n    interval: 48h\n", "out of range"},
		"zero timeout":      {"checks:\n  alpha:\n    timeout: 0s\n", "checks.alpha.timeout (line 3): must be more than 0"},
		"timeout > interval": {"checks:\n  alpha:\n    interval: 5s\n    timeout: 10s\n",
			"checks.alpha: timeout 10s must not exceed interval 5s"},
		"settings type":  {"checks:\n  alpha:\n    limit: lots\n", "checks.alpha: yaml: unmarshal errors:\n  line 3: cannot unmarshal !!str `lots` into int"},
		"settings range": {"checks:\n  alpha:\n    limit: 500\n", "checks.alpha.limit: must be between 0 and 100"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Load([]byte(c.doc), testDefs())
			if err == nil {
				t.Fatalf("accepted %q", c.doc)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q\ndoes not contain %q", err, c.want)
			}
		})
	}
}

func TestLoadFile(t *testing.T) {
	_, err := LoadFile(filepath.Join(t.TempDir(), "missing.yaml"), testDefs())
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: %v", err)
	}
	p := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(p, []byte("logLevel: loud\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadFile(p, testDefs())
	if err == nil || !strings.Contains(err.Error(), "config file "+p+": logLevel") {
		t.Fatalf("error does not name the file and key: %v", err)
	}
}

func FuzzLoad(f *testing.F) {
	for _, seed := range []string{
		"", "hostRoot: /\n", "checks:\n  alpha:\n    interval: 30s\n    limit: 3\n",
		"checks:\n  alpha:\n    bridges: [a, b]\n", "checks: {beta: {enabled: false}}\n", "{{{",
		"checks:\n  alpha: &a {mode: x}\n  beta: *a\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Load(data, testDefs())
		if err == nil {
			if verr := c.Validate(); verr != nil {
				t.Fatalf("Load accepted a config that fails Validate: %v", verr)
			}
		}
	})
}
