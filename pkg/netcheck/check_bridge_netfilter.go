package netcheck

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"time"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/host"
)

// BridgeNetfilterSettings tunes the bridge-netfilter check.
type BridgeNetfilterSettings struct {
	// Bridges names the pod bridges; empty means every bridge with veth ports.
	Bridges []string `yaml:"bridges"`
}

// BridgeNetfilter checks that traffic between pods on one bridge passes
// through iptables, without which Services between pods on the same node
// break (kube-proxy's DNAT is never seen).
func BridgeNetfilter(fsys fs.FS, bl BridgeLister) check.Definition {
	s := &BridgeNetfilterSettings{}
	return check.Definition{
		Name:        "bridge-netfilter",
		Area:        "network",
		Description: "br_netfilter is loaded and bridge-nf-call-iptables is on where pods sit on a bridge",
		Interval:    time.Minute,
		Timeout:     10 * time.Second,
		Conditions:  []string{check.ConditionNetworkConfig},
		Settings:    s,
		Check: check.Func(func(ctx context.Context) ([]check.Finding, error) {
			return runBridgeNetfilter(ctx, fsys, bl, s)
		}),
	}
}

func runBridgeNetfilter(ctx context.Context, fsys fs.FS, bl BridgeLister, s *BridgeNetfilterSettings) ([]check.Finding, error) {
	pn, err := detectPodNetwork(ctx, fsys, bl, s.Bridges, DefaultCNIConfDir)
	if err != nil {
		return nil, err
	}
	if len(pn.bridges) == 0 {
		return nil, check.NotApplicable("no Linux bridge with pod ports on this node")
	}
	on := strings.Join(bridgeNames(pn.bridges), ", ")
	loaded, err := host.Exists(fsys, "proc/sys/net/bridge")
	if err != nil {
		return nil, err
	}
	if !loaded {
		return []check.Finding{finding(check.SeverityProblem, "BrNetfilterNotLoaded",
			"the br_netfilter module is not loaded, so traffic between pods on bridge "+on+
				" bypasses iptables and Services between them fail; fix: modprobe br_netfilter and add br_netfilter to /etc/modules-load.d/")}, nil
	}

	keys := []string{"net.bridge.bridge-nf-call-iptables"}
	if pn.ipv6 {
		keys = append(keys, "net.bridge.bridge-nf-call-ip6tables")
	}
	var out []check.Finding
	for _, k := range keys {
		v, err := host.ReadSysctl(fsys, k)
		if errors.Is(err, fs.ErrNotExist) {
			continue // per-netns since 5.3; older kernels may lack ip6tables
		}
		if err != nil {
			return nil, err
		}
		reason := "BridgeNfCallIptables"
		if strings.HasSuffix(k, "ip6tables") {
			reason = "BridgeNfCallIp6tables"
		}
		if v == "1" {
			out = append(out, finding(check.SeverityOK, reason+"Enabled", k+" is 1"))
			continue
		}
		out = append(out, finding(check.SeverityProblem, reason+"Disabled",
			k+" is "+v+": traffic between pods on bridge "+on+" bypasses iptables, so Services between pods on this node fail; fix: sysctl -w "+k+"=1 and persist it in /etc/sysctl.d/"))
	}
	return out, nil
}
