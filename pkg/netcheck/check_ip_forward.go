package netcheck

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/host"
)

// IPForwardSettings tunes the ip-forward check.
type IPForwardSettings struct {
	// IPv6 says whether to require IPv6 forwarding: auto (when IPv6 pod
	// addressing is seen), true, or false.
	IPv6       string `yaml:"ipv6"`
	CNIConfDir string `yaml:"cniConfDir"`
}

// Validate checks the settings' values.
func (s *IPForwardSettings) Validate() error {
	switch s.IPv6 {
	case "auto", "true", "false":
	default:
		return fmt.Errorf("ipv6: %q is not one of auto, true, false", s.IPv6)
	}
	if s.CNIConfDir == "" {
		return errors.New("cniConfDir: must not be empty")
	}
	return nil
}

// IPForward checks that the node forwards packets, without which pods cannot
// talk to anything beyond their own node.
func IPForward(fsys fs.FS, bl BridgeLister) check.Definition {
	s := &IPForwardSettings{IPv6: "auto", CNIConfDir: DefaultCNIConfDir}
	return check.Definition{
		Name:        "ip-forward",
		Area:        "network",
		Description: "net.ipv4.ip_forward (and IPv6 forwarding with IPv6 pods) is on",
		Interval:    time.Minute,
		Timeout:     10 * time.Second,
		Conditions:  []string{check.ConditionNetworkConfig},
		Settings:    s,
		Check: check.Func(func(ctx context.Context) ([]check.Finding, error) {
			return runIPForward(ctx, fsys, bl, s)
		}),
	}
}

func runIPForward(ctx context.Context, fsys fs.FS, bl BridgeLister, s *IPForwardSettings) ([]check.Finding, error) {
	pn, err := detectPodNetwork(ctx, fsys, bl, nil, s.CNIConfDir)
	if err != nil {
		return nil, err
	}
	// Off on a machine with no pod network is worth saying, not alarming.
	off := check.SeverityProblem
	hint := ""
	if !pn.present() {
		off = check.SeverityWarning
		hint = " (no pod network found here: no CNI config in " + s.CNIConfDir + " and no bridge with pod ports)"
	}
	var out []check.Finding
	v4, err := host.ReadSysctl(fsys, "net.ipv4.ip_forward")
	if err != nil {
		return nil, err
	}
	if v4 == "1" {
		out = append(out, finding(check.SeverityOK, "IPForwardEnabled", "net.ipv4.ip_forward is 1"))
	} else {
		out = append(out, finding(off, "IPForwardDisabled",
			"net.ipv4.ip_forward is "+v4+": the node does not route pod traffic to or from other hosts"+hint+
				"; fix: sysctl -w net.ipv4.ip_forward=1 and persist it in /etc/sysctl.d/"))
	}

	if s.IPv6 == "false" || (s.IPv6 == "auto" && !pn.ipv6) {
		return out, nil
	}
	v6, err := host.ReadSysctl(fsys, "net.ipv6.conf.all.forwarding")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		out = append(out, finding(check.SeverityProblem, "IPv6Disabled",
			"IPv6 pod networking is configured but IPv6 is disabled in the kernel (no /proc/sys/net/ipv6); fix: remove ipv6.disable=1 from the kernel command line"))
	case err != nil:
		return nil, err
	case v6 == "1":
		out = append(out, finding(check.SeverityOK, "IPv6ForwardingEnabled", "net.ipv6.conf.all.forwarding is 1"))
	default:
		out = append(out, finding(check.SeverityProblem, "IPv6ForwardingDisabled",
			"net.ipv6.conf.all.forwarding is "+v6+" while pods have IPv6 addresses: IPv6 pod traffic is not routed; fix: sysctl -w net.ipv6.conf.all.forwarding=1 and persist it in /etc/sysctl.d/"))
	}
	return out, nil
}
