package cri

import (
	"context"
	"fmt"
	"net/netip"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// PodIP is the IP of a pod sandbox running on this node.
type PodIP struct {
	IP  netip.Addr
	Pod check.Object
}

// PodIPLister lists the IPs of the ready pod sandboxes.
type PodIPLister interface {
	PodIPs(ctx context.Context) ([]PodIP, error)
}

// sandboxStatuser is the optional runtime capability of PodSandboxStatus.
type sandboxStatuser interface {
	PodSandboxStatus(ctx context.Context, id string, verbose bool) (*runtimeapi.PodSandboxStatusResponse, error)
}

// PodIPs asks the runtime for the IPs of the ready sandboxes of the
// current snapshot (host-network sandboxes have none), once per sandbox.
func (s *Source) PodIPs(ctx context.Context) ([]PodIP, error) {
	snap, err := s.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	st, ok := s.rt.(sandboxStatuser)
	if !ok {
		return nil, fmt.Errorf("cri: the runtime client has no PodSandboxStatus")
	}
	var out []PodIP
	live := map[string]bool{}
	for _, sb := range snap.Sandboxes {
		if sb.GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
			continue
		}
		id := sb.GetId()
		live[id] = true
		s.mu.Lock()
		ips, cached := s.podIPs[id]
		s.mu.Unlock()
		if !cached {
			r, err := st.PodSandboxStatus(ctx, id, false)
			if err != nil {
				continue // gone since the list
			}
			n := r.GetStatus().GetNetwork()
			for _, a := range append([]string{n.GetIp()}, additional(n)...) {
				if ip, err := netip.ParseAddr(a); err == nil {
					ips = append(ips, ip)
				}
			}
			s.mu.Lock()
			if s.podIPs == nil {
				s.podIPs = map[string][]netip.Addr{}
			}
			s.podIPs[id] = ips
			s.mu.Unlock()
		}
		for _, ip := range ips {
			out = append(out, PodIP{IP: ip, Pod: PodObject(sb)})
		}
	}
	s.mu.Lock()
	for id := range s.podIPs {
		if !live[id] {
			delete(s.podIPs, id)
		}
	}
	s.mu.Unlock()
	return out, nil
}

func additional(n *runtimeapi.PodSandboxNetworkStatus) []string {
	var out []string
	for _, a := range n.GetAdditionalIps() {
		out = append(out, a.GetIp())
	}
	return out
}
