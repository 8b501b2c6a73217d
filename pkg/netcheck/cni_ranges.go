package netcheck

import (
	"encoding/json"
	"fmt"
	"net/netip"
)

// ParseCNIRanges returns the pod address ranges a CNI config (a .conflist
// or a single-plugin .conf) hands out through host-local style IPAM:
// ipam.ranges[][].subnet and the older ipam.subnet, in every plugin and
// in a delegate. IPAMs that keep their pools elsewhere (calico-ipam,
// Cilium, cloud VPC CNIs) give none.
func ParseCNIRanges(b []byte) ([]netip.Prefix, error) {
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("cni config: %w", err)
	}
	var out []netip.Prefix
	seen := map[netip.Prefix]bool{}
	add := func(s any) {
		str, ok := s.(string)
		if !ok {
			return
		}
		p, err := netip.ParsePrefix(str)
		if err != nil || seen[p.Masked()] {
			return
		}
		seen[p.Masked()] = true
		out = append(out, p.Masked())
	}
	var plugin func(m map[string]any, depth int)
	plugin = func(m map[string]any, depth int) {
		if depth > 3 {
			return
		}
		if ipam, ok := m["ipam"].(map[string]any); ok {
			add(ipam["subnet"])
			ranges, _ := ipam["ranges"].([]any)
			for _, set := range ranges {
				rs, _ := set.([]any)
				for _, r := range rs {
					if rm, ok := r.(map[string]any); ok {
						add(rm["subnet"])
					}
				}
			}
		}
		if d, ok := m["delegate"].(map[string]any); ok {
			plugin(d, depth+1)
		}
	}
	plugin(v, 0)
	plugins, _ := v["plugins"].([]any)
	for _, p := range plugins {
		if m, ok := p.(map[string]any); ok {
			plugin(m, 1)
		}
	}
	return out, nil
}
