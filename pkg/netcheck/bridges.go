// Package netcheck holds node-doctor's network checks: the node's forwarding
// sysctls, bridge netfilter and hairpin mode, routes, conntrack, cluster DNS and
// kube-proxy (its rules through pkg/kubeproxy, read by pkg/dataplane).
package netcheck

import (
	"context"
	"slices"
)

// Bridge is a Linux bridge on the node with its ports.
type Bridge struct {
	Name    string
	Up      bool
	Promisc bool
	// GlobalIPv6 is set when the bridge has a non-link-local IPv6 address,
	// which is how IPv6 pod networking shows on a bridge CNI node.
	GlobalIPv6 bool
	Ports      []BridgePort
}

// BridgePort is one port of a bridge.
type BridgePort struct {
	Name    string
	Kind    string // netlink link type, e.g. "veth"
	Hairpin bool
}

// PodPorts returns the ports that lead to pods (veth pairs).
func (b Bridge) PodPorts() []BridgePort {
	var out []BridgePort
	for _, p := range b.Ports {
		if p.Kind == "veth" {
			out = append(out, p)
		}
	}
	return out
}

// BridgeLister lists the node's bridges.
type BridgeLister interface {
	Bridges(ctx context.Context) ([]Bridge, error)
}

// podBridges picks the bridges that carry pods: the named ones when names is
// set, otherwise every bridge with at least one veth port.
func podBridges(all []Bridge, names []string) []Bridge {
	var out []Bridge
	for _, b := range all {
		if len(names) > 0 {
			if slices.Contains(names, b.Name) {
				out = append(out, b)
			}
			continue
		}
		if len(b.PodPorts()) > 0 {
			out = append(out, b)
		}
	}
	return out
}

func bridgeNames(bs []Bridge) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.Name
	}
	return out
}
