package netcheck

import (
	"github.com/node-doctor/node-doctor/pkg/dataplane"

	"github.com/node-doctor/node-doctor/pkg/kubeproxy"

	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// IPTablesBackends finds KUBE-* chains in both the nft and the legacy
// iptables backend: kubelet, kube-proxy or the CNI disagree on which
// iptables they use, and rules in the backend kube-proxy no longer writes
// still match packets.
func IPTablesBackends(d kubeproxy.KubeProxyDeps) check.Definition {
	return check.Definition{
		Name:        "iptables-backends",
		Area:        "network",
		Description: "Kubernetes' iptables chains live in one backend (nft or legacy), not both",
		Interval:    5 * time.Minute,
		Timeout:     30 * time.Second,
		Conditions:  []string{check.ConditionKubeProxyRules},
		Check: check.Func(func(ctx context.Context) ([]check.Finding, error) {
			snap := d.Snapshot()
			if !snap.HasIPTables() {
				return nil, check.NotApplicable("no iptables-save available")
			}
			counts := map[string]int{}
			examples := map[string][]string{}
			for _, be := range []string{dataplane.BackendNFT, dataplane.BackendLegacy} {
				tables, err := backendChains(ctx, snap, be)
				if err != nil {
					if be == dataplane.BackendLegacy && errors.Is(err, exec.ErrNotFound) {
						continue // legacy tools missing: nothing can be there
					}
					if be == dataplane.BackendLegacy {
						// Not reading it would hide chains there; in a
						// container this needs CAP_NET_RAW.
						return nil, fmt.Errorf("reading the legacy iptables backend: %w", err)
					}
					return nil, err
				}
				for _, tb := range tables {
					for _, c := range tb.Order {
						if strings.HasPrefix(c, "KUBE-") {
							counts[be]++
							if len(examples[be]) < 3 {
								examples[be] = append(examples[be], tb.Name+"/"+c)
							}
						}
					}
				}
			}
			nft, legacy := counts[dataplane.BackendNFT], counts[dataplane.BackendLegacy]
			if nft == 0 && legacy == 0 {
				return nil, check.NotApplicable("no KUBE-* iptables chains in either backend (nftables-mode kube-proxy, or no kube-proxy)")
			}
			if nft > 0 && legacy > 0 {
				f := finding(check.SeverityProblem, "KubeChainsInBothBackends", fmt.Sprintf(
					"KUBE-* chains are in both iptables backends (nft: %d, e.g. %s; legacy: %d, e.g. %s): kubelet, kube-proxy and the CNI must use the same iptables; "+
						"find which component uses the other one and remove its stale chains from that backend", nft, check.SomeOf(examples[dataplane.BackendNFT], nft), legacy, check.SomeOf(examples[dataplane.BackendLegacy], legacy)))
				f.Condition = check.ConditionKubeProxyRules
				f.Details = map[string]string{"nft_chains": fmt.Sprint(nft), "legacy_chains": fmt.Sprint(legacy)}
				return []check.Finding{f}, nil
			}
			be := dataplane.BackendNFT
			if legacy > 0 {
				be = dataplane.BackendLegacy
			}
			f := finding(check.SeverityOK, "SingleIPTablesBackend", fmt.Sprintf("Kubernetes' iptables chains are all in the %s backend", be))
			f.Condition = check.ConditionKubeProxyRules
			f.Details = map[string]string{"backend": be}
			return []check.Finding{f}, nil
		}),
	}
}

// backendChains is a backend's IPv4 nat, filter and mangle tables from the
// snapshot (their chains are what the check reads), or the first read error.
func backendChains(ctx context.Context, snap *kubeproxy.Snapshot, be string) ([]*dataplane.IPTTable, error) {
	r, err := snap.IPTables(ctx, be, false)
	if err != nil {
		return nil, err
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	mangle, err := snap.Mangle(ctx, be)
	if err != nil {
		return nil, err
	}
	return []*dataplane.IPTTable{r.NAT, r.Filter, mangle}, nil
}
