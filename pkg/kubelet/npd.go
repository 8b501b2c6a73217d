package kubelet

import (
	"encoding/json"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"
)

// NPDHealthChecker is what one of NPD's health-checker monitor configs
// (a custom plugin monitor running NPD's health-checker binary) asks for,
// with the binary's own defaults where an argument is absent.
type NPDHealthChecker struct {
	Component string // kubelet, docker, cri, kube-proxy
	Service   string
	// EnableRepair: restart the service when it is unhealthy.
	EnableRepair bool
	// Cooldown: how long after it starts the component is not judged.
	Cooldown time.Duration
	// Timeout: how long to wait for the component's answer.
	Timeout time.Duration
	// Interval is the monitor's invoke_interval.
	Interval time.Duration
	// Condition is the condition type its rule drives.
	Condition string
}

// ParseNPDHealthChecker reads an NPD custom plugin monitor config; ok is
// false when it does not run NPD's health-checker.
func ParseNPDHealthChecker(data []byte) (hc NPDHealthChecker, ok bool, err error) {
	var f struct {
		Plugin       string `json:"plugin"`
		PluginConfig struct {
			InvokeInterval string `json:"invoke_interval"`
		} `json:"pluginConfig"`
		Rules []struct {
			Condition string   `json:"condition"`
			Path      string   `json:"path"`
			Args      []string `json:"args"`
		} `json:"rules"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return hc, false, err
	}
	if f.Plugin != "custom" || len(f.Rules) != 1 || path.Base(strings.ReplaceAll(f.Rules[0].Path, `\`, "/")) != "health-checker" {
		return hc, false, nil
	}
	// The health-checker binary's defaults.
	hc = NPDHealthChecker{Component: "kubelet", EnableRepair: true, Cooldown: 2 * time.Minute, Timeout: 10 * time.Second, Condition: f.Rules[0].Condition}
	if f.PluginConfig.InvokeInterval != "" {
		if hc.Interval, err = time.ParseDuration(f.PluginConfig.InvokeInterval); err != nil {
			return hc, true, fmt.Errorf("pluginConfig.invoke_interval: %w", err)
		}
	}
	for _, a := range f.Rules[0].Args {
		name, val, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		var err error
		switch name {
		case "component":
			hc.Component = val
		case "service", "systemd-service":
			hc.Service = val
		case "enable-repair":
			hc.EnableRepair, err = strconv.ParseBool(orTrue(val))
		case "cooldown-time":
			hc.Cooldown, err = time.ParseDuration(val)
		case "health-check-timeout":
			hc.Timeout, err = time.ParseDuration(val)
		}
		if err != nil {
			return hc, true, fmt.Errorf("health-checker argument %s: %w", a, err)
		}
	}
	if hc.Service == "" {
		hc.Service = hc.Component
		if hc.Component == "cri" {
			hc.Service = "containerd"
		}
	}
	return hc, true, nil
}

func orTrue(s string) string {
	if s == "" {
		return "true"
	}
	return s
}

// ApplyNPD takes a kubelet health-checker's thresholds into the settings:
// its cooldown, and its timeout for the healthz answer.
func (s *HealthSettings) ApplyNPD(hc NPDHealthChecker) error {
	s.Cooldown, s.HealthzTimeout = hc.Cooldown, hc.Timeout
	return s.Validate()
}
