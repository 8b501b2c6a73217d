package app

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/config"
	"github.com/node-doctor/node-doctor/pkg/kernel"
	"github.com/node-doctor/node-doctor/pkg/kubelet"
	"github.com/node-doctor/node-doctor/pkg/plugin"
)

// npdFlags are node-problem-detector's command-line flags, taken by `run`
// so that a DaemonSet's args can stay when it switches. node-doctor's own
// flags win where both are given.
type npdFlags struct {
	systemLog, customPlugin, systemStats []string
	k8sExporter                          optBool
	promAddress                          optString
	promPort                             optInt
	hostname                             optString
	heartbeat                            optDuration
	apiserverOverride                    optString
	// NPD's own health server and klog's flags: accepted, nothing to do.
	address   string
	port      int
	logStderr bool
}

func (n *npdFlags) register(f *pflag.FlagSet) {
	const npd = "node-problem-detector's flag: "
	f.StringSliceVar(&n.systemLog, "config.system-log-monitor", nil, npd+"system-log-monitor config files (comma-separated), added to checks.kernel-log.ruleFiles")
	f.StringSliceVar(&n.customPlugin, "config.custom-plugin-monitor", nil, npd+"custom plugin monitor config files, added to checks.custom-plugin.monitors; NPD's health-checker configs are mapped onto the native checks; those node-doctor cannot run (log-counter) are logged with why and skipped")
	f.StringSliceVar(&n.systemStats, "config.system-stats-monitor", nil, npd+"system-stats-monitor config files: logged as not run (node_exporter exports host statistics)")
	boolFlag(f, &n.k8sExporter, "enable-k8s-exporter", true, npd+"false turns reporting to Kubernetes off")
	stringFlag(f, &n.promAddress, "prometheus-address", "127.0.0.1", npd+"with --prometheus-port, where /metrics is served (NPD's metrics problem_gauge and problem_counter are among them)")
	intFlag(f, &n.promPort, "prometheus-port", 20257, npd+"port of /metrics; 0 keeps node-doctor's --metrics-address")
	stringFlag(f, &n.hostname, "hostname-override", "", npd+"same as --node-name")
	durationFlag(f, &n.heartbeat, "k8s-exporter-heartbeat-period", 5*time.Minute, npd+"same as --condition-heartbeat")
	stringFlag(f, &n.apiserverOverride, "apiserver-override", "", npd+"not taken: give --kubeconfig instead")
	f.StringVar(&n.address, "address", "127.0.0.1", npd+"NPD's health server address: accepted, /healthz is served on --metrics-address")
	f.IntVar(&n.port, "port", 20256, npd+"NPD's health server port: accepted, see --address")
	f.BoolVar(&n.logStderr, "logtostderr", true, "klog's flag, as NPD's manifests pass it: accepted, node-doctor logs to stderr")
	for _, name := range []string{"address", "port", "logtostderr"} {
		_ = f.MarkHidden(name)
	}
}

// override folds the NPD flags that were given into the config, after the
// config file; node-doctor's own flags (rf) win where both are given.
func (n *npdFlags) override(c *config.Config, rf *runFlags) error {
	if n.apiserverOverride.set && n.apiserverOverride.v != "" {
		return fmt.Errorf("--apiserver-override (node-problem-detector's) is not taken: its URL options are NPD's own; give --kubeconfig, or nothing in a pod")
	}
	if n.promAddress.set || n.promPort.set {
		if !rf.metricsAddress.set && n.promPort.v != 0 {
			if net.ParseIP(n.promAddress.v) == nil && n.promAddress.v != "" {
				return fmt.Errorf("--prometheus-address %q is not an IP address", n.promAddress.v)
			}
			if n.promPort.v < 0 || n.promPort.v > 65535 {
				return fmt.Errorf("--prometheus-port %d is not a port", n.promPort.v)
			}
			c.MetricsAddress = net.JoinHostPort(n.promAddress.v, strconv.Itoa(n.promPort.v))
		}
	}
	if n.hostname.set && !rf.nodeName.set {
		c.NodeName = n.hostname.v
	}
	if n.heartbeat.set && !rf.heartbeat.set {
		c.ConditionHeartbeat = n.heartbeat.v
	}
	return nil
}

// noKube says why reporting to Kubernetes is off by NPD's flag, or nil.
func (n *npdFlags) noKube() error {
	if n.k8sExporter.set && !n.k8sExporter.v {
		return errors.New("reporting to Kubernetes turned off by --enable-k8s-exporter=false")
	}
	return nil
}

// addToChecks adds the NPD monitor configs given to the checks' settings.
func (n *npdFlags) addToChecks(s *setup) error {
	for _, file := range n.systemStats {
		s.log.Warn("not run: node-problem-detector system-stats-monitor config", "file", file,
			"why", "node-doctor does not collect host statistics; node_exporter exports them")
	}
	var monitors []string
	for _, file := range n.customPlugin {
		mapped, err := mapHealthChecker(s, file)
		if err != nil {
			return fmt.Errorf("node-problem-detector monitor config %s: %w", file, err)
		}
		if !mapped {
			monitors = append(monitors, file)
		}
	}
	if err := addNPDFiles(s, kernel.CheckName, n.systemLog, func(set any) *[]string {
		return &set.(*kernel.Settings).RuleFiles
	}, func(file string) (string, error) {
		_, err := kernel.LoadRuleFile(file)
		var refused *kernel.RefusedError
		if errors.As(err, &refused) {
			return refused.Why, nil
		}
		return "", err
	}); err != nil {
		return err
	}
	return addNPDFiles(s, plugin.CheckName, monitors, func(set any) *[]string {
		return &set.(*plugin.Settings).Monitors
	}, func(file string) (string, error) {
		data, err := os.ReadFile(file)
		if err != nil {
			return "", err
		}
		return kernel.CustomPluginRefusal(data), nil
	})
}

// addNPDFiles adds NPD monitor configs to the list field of the named
// check's settings and validates them. A file of a kind node-doctor does
// not run (refused says why) is logged and skipped: an NPD DaemonSet's
// args stay valid. A missing or broken file is an error.
func addNPDFiles(s *setup, checkName string, files []string, list func(settings any) *[]string, refused func(file string) (why string, err error)) error {
	if len(files) == 0 {
		return nil
	}
	var d *check.Definition
	for _, def := range s.all {
		if def.Name == checkName {
			d = def
		}
	}
	if d == nil {
		return fmt.Errorf("node-problem-detector monitor configs given but there is no %s check", checkName)
	}
	dst := list(d.Settings)
	var errs []error
	for _, file := range files {
		why, err := refused(file)
		switch {
		case err != nil:
			errs = append(errs, err)
		case why != "":
			s.log.Warn("not run: node-problem-detector monitor config", "file", file, "why", why)
		default:
			*dst = append(*dst, file)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("node-problem-detector monitor configs: %w", err)
	}
	if v, ok := d.Settings.(check.Validator); ok {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("checks.%s: %w", checkName, err)
		}
	}
	return nil
}

// mapHealthChecker takes one of NPD's health-checker configs onto the
// native check that does its job, with its thresholds where they mean
// something here. Repair is never done: node-doctor only reads.
func mapHealthChecker(s *setup, file string) (bool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return false, err
	}
	hc, ok, err := kubelet.ParseNPDHealthChecker(data)
	if !ok {
		return false, nil //nolint:nilerr // not a health-checker: loaded as a rule file
	}
	if err != nil {
		return true, err
	}
	def := func(name string) *check.Definition {
		for _, d := range s.all {
			if d.Name == name {
				return d
			}
		}
		return nil
	}
	log := s.log.With("file", file, "component", hc.Component)
	switch hc.Component {
	case "kubelet":
		d := def("kubelet-health")
		ks, _ := d.Settings.(*kubelet.HealthSettings)
		if err := ks.ApplyNPD(hc); err != nil {
			return true, fmt.Errorf("--cooldown-time/--health-check-timeout: %w", err)
		}
		if hc.Interval > 0 {
			d.Interval = hc.Interval
		}
		// A run waits for healthz at most 3/4 of its timeout.
		d.Timeout = max(d.Timeout, (hc.Timeout*4/3).Round(time.Second)+time.Second)
		log.Info("node-problem-detector health-checker mapped onto kubelet-health (condition KubeletUnhealthy)",
			"cooldown", hc.Cooldown, "healthz_timeout", hc.Timeout, "interval", d.Interval, "timeout", d.Timeout)
	case "docker", "cri", "containerd":
		log.Info("node-problem-detector health-checker mapped onto cri-runtime and cri-runtime-ready (condition ContainerRuntimeProblem, where NPD's is " + hc.Condition + "); its thresholds do not apply: the CRI checks time each call themselves")
	case "kube-proxy":
		log.Info("node-problem-detector health-checker mapped onto kube-proxy-health (condition KubeProxyRulesProblem, where NPD's is " + hc.Condition + ")")
	default:
		return true, fmt.Errorf("health-checker --component=%s: NPD knows kubelet, docker, cri and kube-proxy", hc.Component)
	}
	if hc.EnableRepair {
		log.Warn("repair is off: node-doctor does not restart "+hc.Service+" (--enable-repair=true is not taken); it only reports", "service", hc.Service)
	}
	return true, nil
}
