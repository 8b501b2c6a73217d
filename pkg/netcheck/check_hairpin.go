package netcheck

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// HairpinSettings tunes the hairpin check.
type HairpinSettings struct {
	// Bridges names the pod bridges; empty means every bridge with veth ports.
	Bridges []string `yaml:"bridges"`
}

// Hairpin checks that a pod can reach itself through its own Service: the
// bridge must send a frame back out of the port it came in on, which needs
// hairpin mode on every pod port or the bridge in promiscuous mode.
func Hairpin(bl BridgeLister) check.Definition {
	s := &HairpinSettings{}
	return check.Definition{
		Name:        "hairpin",
		Area:        "network",
		Description: "every pod port of a pod bridge has hairpin mode on (or the bridge is promiscuous)",
		Interval:    time.Minute,
		Timeout:     10 * time.Second,
		Conditions:  []string{check.ConditionNetworkConfig},
		Settings:    s,
		Check: check.Func(func(ctx context.Context) ([]check.Finding, error) {
			all, err := bl.Bridges(ctx)
			if err != nil {
				return nil, err
			}
			return hairpinFindings(podBridges(all, s.Bridges))
		}),
	}
}

func hairpinFindings(bridges []Bridge) ([]check.Finding, error) {
	if len(bridges) == 0 {
		return nil, check.NotApplicable("no Linux bridge with pod ports on this node")
	}
	var out []check.Finding
	for _, b := range bridges {
		ports := b.PodPorts()
		if b.Promisc {
			f := finding(check.SeverityOK, "BridgePromiscuous", fmt.Sprintf("bridge %s is promiscuous, so its %d pod ports hairpin", b.Name, len(ports)))
			f.Details = map[string]string{"bridge": b.Name}
			out = append(out, f)
			continue
		}
		var off []string
		for _, p := range ports {
			if !p.Hairpin {
				off = append(off, p.Name)
			}
		}
		if len(off) == 0 {
			f := finding(check.SeverityOK, "HairpinEnabled", fmt.Sprintf("bridge %s: hairpin mode is on for all %d pod ports", b.Name, len(ports)))
			f.Details = map[string]string{"bridge": b.Name}
			out = append(out, f)
			continue
		}
		f := finding(check.SeverityProblem, "HairpinModeOff", fmt.Sprintf(
			"bridge %s: hairpin mode is off on %d of %d pod ports (%s), so those pods cannot reach themselves through their own Service; "+
				"fix: set \"hairpinMode\": true in the bridge CNI config (or kubelet --hairpin-mode=hairpin-veth) and recreate the pods, "+
				"or echo 1 > /sys/class/net/%s/brif/<port>/hairpin_mode",
			b.Name, len(off), len(ports), check.Abbreviate(off, 5), b.Name))
		f.Details = map[string]string{"bridge": b.Name, "ports": strings.Join(off, ",")}
		out = append(out, f)
	}
	return out, nil
}
