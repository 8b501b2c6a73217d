package cri

import (
	"fmt"
	"io/fs"
	"path"
	"strings"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// DefaultCNIConfDir is where runtimes look for CNI configs unless told.
const DefaultCNIConfDir = "/etc/cni/net.d"

// NetworkReadyCheck reports the runtime's NetworkReady condition: false
// means the CNI plugin is not initialised and no pod sandbox gets a network.
// It looks into the CNI config dir (under the host root) to say why.
func NetworkReadyCheck(src Snapshotter, hostFS fs.FS) check.Definition {
	return check.Definition{
		Name:        "cri-network-ready",
		Area:        Area,
		Description: "the container runtime reports NetworkReady=true (the CNI plugin is initialised)",
		Interval:    checkInterval,
		Timeout:     checkTimeout,
		Conditions:  []string{check.ConditionNetworkConfig},
		Check:       fromSnapshot(src, func(s *Snapshot) []check.Finding { return networkReadyFindings(s, hostFS) }),
	}
}

func networkReadyFindings(s *Snapshot, hostFS fs.FS) []check.Finding {
	const cond = check.ConditionNetworkConfig
	c := s.Condition("NetworkReady")
	if c == nil {
		return []check.Finding{{Severity: check.SeverityWarning, Condition: cond, Reason: "NetworkReadyMissing", Message: "the runtime's Status has no NetworkReady condition; kubelet treats that as network not ready; upgrade or fix the runtime's CRI plugin"}}
	}
	if c.GetStatus() {
		return []check.Finding{ok(cond, "NetworkReady", "the container runtime reports NetworkReady=true")}
	}
	confDir, binDir := CNIDirsFromInfo(s.Status.GetInfo())
	if confDir == "" {
		confDir = DefaultCNIConfDir
	}
	f := check.Finding{Severity: check.SeverityProblem, Condition: cond, Reason: "NetworkNotReady", Details: map[string]string{
		"reason": c.GetReason(), "message": c.GetMessage(), "cni_conf_dir": confDir, "cni_bin_dir": binDir,
	}}
	f.Message = fmt.Sprintf("the container runtime reports NetworkReady=false (%s: %s): the CNI plugin is not initialised, so no pod can get a network; %s; "+
		"install or fix the network add-on (its DaemonSet normally writes the config) and check that its plugin binaries are in %s",
		orDash(c.GetReason()), orDash(c.GetMessage()), describeConfDir(hostFS, confDir), orValue(binDir, "the CNI bin dir (/opt/cni/bin)"))
	return []check.Finding{f}
}

// describeConfDir says what the CNI config dir holds.
func describeConfDir(hostFS fs.FS, dir string) string {
	if hostFS == nil {
		return "look at the CNI config dir " + dir
	}
	entries, err := fs.ReadDir(hostFS, hostPath(dir))
	if err != nil {
		return fmt.Sprintf("the CNI config dir %s cannot be read (%v)", dir, err)
	}
	var confs []string
	for _, e := range entries {
		switch path.Ext(e.Name()) {
		case ".conf", ".conflist", ".json":
			confs = append(confs, e.Name())
		}
	}
	if len(confs) == 0 {
		return fmt.Sprintf("the CNI config dir %s holds no .conf/.conflist file", dir)
	}
	return fmt.Sprintf("the CNI config dir %s holds %s but the runtime did not load it (check it is valid JSON and names installed plugins)", dir, strings.Join(confs, ", "))
}

func orValue(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
