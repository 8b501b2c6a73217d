package kubeproxy

import (
	"github.com/node-doctor/node-doctor/pkg/dataplane"

	"net"
	"slices"
	"strconv"
)

// ipvsChain is the pseudo chain name of one virtual server, so the IPVS view
// fits the same comparison as the chain-based modes.
func ipvsChain(key string) string { return "ipvs:" + key }

// ProgrammedFromIPVS turns virtual servers into the common view, split by
// family. Destinations with weight 0 are draining (terminating) and do not
// get new connections, so they are left out.
func ProgrammedFromIPVS(vs []dataplane.IPVSVirtual) map[bool]*Programmed {
	out := map[bool]*Programmed{false: newProgrammed("ipvs"), true: newProgrammed("ipvs")}
	out[false].NodePorts, out[true].NodePorts = nil, nil
	for _, v := range vs {
		if v.Service.Address == nil || v.Service.FWMark != 0 {
			continue
		}
		p := out[v.Service.Address.To4() == nil]
		p.Rules++
		key := svcKey(v.Service.Address.String(), dataplane.IPVSProto(v.Service.Protocol), strconv.Itoa(int(v.Service.Port)))
		chain := ipvsChain(key)
		p.Services[key] = chain
		eps := []string{}
		for _, d := range v.Destinations {
			if d.Weight > 0 {
				eps = append(eps, net.JoinHostPort(d.Address.String(), strconv.Itoa(int(d.Port))))
			}
		}
		slices.Sort(eps)
		p.Endpoints[chain] = eps
	}
	return out
}
