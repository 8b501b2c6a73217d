// Package checks is the one place where node-doctor's checks are registered
// and given their dependencies.
package checks

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"k8s.io/utils/clock"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/cri"
	"github.com/node-doctor/node-doctor/pkg/dataplane"
	"github.com/node-doctor/node-doctor/pkg/kernel"
	"github.com/node-doctor/node-doctor/pkg/kubelet"
	"github.com/node-doctor/node-doctor/pkg/kubeproxy"
	"github.com/node-doctor/node-doctor/pkg/netcheck"
	"github.com/node-doctor/node-doctor/pkg/plugin"
)

// Deps are the outside systems checks read from.
type Deps struct {
	HostFS  fs.FS
	Bridges netcheck.BridgeLister
	// Routes reads the node's routing table for the pod CIDR route check.
	Routes netcheck.RouteLister
	// Conntrack reads conntrack counters over ctnetlink where the kernel
	// has no /proc/net/stat/nf_conntrack; nil: not read.
	Conntrack netcheck.ConntrackNetlink
	// Clock is the real clock in the agent; nil means the real clock.
	Clock clock.Clock
	// CRI gives the runtime checks one shared snapshot per round.
	CRI cri.Snapshotter
	// PodIPs lists the IPs of this node's pod sandboxes (a pod range
	// source); may be nil.
	PodIPs cri.PodIPLister
	// Pods names the pod behind a cgroup in the kernel log; may be nil.
	Pods kernel.Attributor
	// APIPods reads this node's pods from the API, so the runtime checks
	// leave pods being deleted or completed alone; nil, or reads failing
	// without a cluster: they judge from the runtime alone.
	APIPods cri.Pods
	// Services lists Services and EndpointSlices from the shared informers;
	// without a cluster its reads say why.
	Services kubeproxy.ServiceLister
	// Dataplane is the one snapshot source of the packet-filter tables and
	// IPVS that every network check reads (nil: none); KubeProxy is
	// kube-proxy's HTTP API (nil: HTTP to the configured addresses).
	Dataplane *kubeproxy.Source
	KubeProxy kubeproxy.KubeProxyAPI
	// Node reads this node's Lease and Node for the kubelet check; nil
	// without a cluster.
	Node kubelet.API
}

func (d Deps) kubeProxy() kubeproxy.KubeProxyDeps {
	tables := d.Dataplane
	if tables == nil {
		tables = kubeproxy.NewSource(dataplane.Readers{}, dataplane.SourceOptions{})
	}
	return kubeproxy.KubeProxyDeps{Services: d.Services, Tables: tables, KubeProxy: d.KubeProxy, Clock: d.Clock}
}

// podRanges finds this node's pod ranges in the Node, kube-proxy's
// clusterCIDR, the runtime's CNI config and the pods' IPs, each source's
// last answer kept while it fails.
func (d Deps) podRanges() netcheck.PodRanges {
	kp := d.KubeProxy
	if kp == nil {
		kp = kubeproxy.KubeProxyHTTP{MetricsURL: "http://127.0.0.1:10249"}
	}
	src := netcheck.PodRangeSources{Node: d.Services, KubeProxy: kp, FS: d.HostFS}
	if d.CRI != nil {
		src.CNIConfDir = func(ctx context.Context) (string, error) {
			s, err := d.CRI.Snapshot(ctx)
			var nr *cri.NoRuntimeError
			if errors.As(err, &nr) {
				return "", nil // no runtime to ask: the default directory
			}
			if err != nil {
				return "", fmt.Errorf("CNI config dir from the runtime: %w", err)
			}
			if s == nil {
				return "", nil
			}
			dir, _ := cri.CNIDirsFromInfo(s.Status.GetInfo())
			return dir, nil
		}
	}
	if d.PodIPs != nil {
		src.Pods = podAddrs{d.PodIPs}
	}
	return &netcheck.LastGoodRanges{Sources: src}
}

// podAddrs gives netcheck the runtime's pod IPs.
type podAddrs struct{ l cri.PodIPLister }

func (p podAddrs) PodAddrs(ctx context.Context) ([]netcheck.PodAddr, error) {
	ips, err := p.l.PodIPs(ctx)
	var nr *cri.NoRuntimeError
	if errors.As(err, &nr) {
		err = fmt.Errorf("%w: %w", netcheck.ErrRangeSourceAbsent, err)
	}
	out := make([]netcheck.PodAddr, 0, len(ips))
	for _, ip := range ips {
		out = append(out, netcheck.PodAddr{IP: ip.IP, Pod: ip.Pod.Namespace + "/" + ip.Pod.Name})
	}
	return out, err
}

// clusterDNS reads the kubelet's DNS settings and verifies the DNS
// Service's kube-proxy rules like kube-proxy-rules does.
func (d Deps) clusterDNS(kubelets kubelet.Processes) netcheck.ClusterDNSDeps {
	rules := d.kubeProxy()
	return netcheck.ClusterDNSDeps{Kubelet: kubeletDNS{kubelet.DNSSource{FS: d.HostFS, Processes: kubelets}}, Services: d.Services, FS: d.HostFS, Addrs: netcheck.HostAddrs{}, Rules: &rules}
}

// kubeletDNS gives netcheck the kubelet's DNS settings.
type kubeletDNS struct{ s kubelet.DNSSource }

func (k kubeletDNS) KubeletDNS(ctx context.Context) (netcheck.KubeletDNSConfig, bool, error) {
	if k.s.FS == nil {
		return netcheck.KubeletDNSConfig{}, false, nil
	}
	c, found, err := k.s.KubeletDNS(ctx)
	return netcheck.KubeletDNSConfig{ClusterDNS: c.ClusterDNS, ClusterDNSFrom: c.ClusterDNSSource, ClusterDomain: c.ClusterDomain,
		ResolvConf: c.ResolvConf, ResolvConfFrom: c.ResolvConfFrom}, found, err
}

// tickerClock is Clock when it has tickers, else nil (the real clock).
func (d Deps) tickerClock() clock.WithTicker {
	c, _ := d.Clock.(clock.WithTicker)
	return c
}

// All returns every check, in report order.
func All(d Deps) []*check.Definition {
	// One kubelet finder for the checks that look for the kubelet, so
	// that proc is scanned at most once a minute while it runs.
	kubelets := kubelet.NewKubeletFinder(d.HostFS, d.Clock)
	defs := []check.Definition{
		netcheck.IPForward(d.HostFS, d.Bridges),
		netcheck.BridgeNetfilter(d.HostFS, d.Bridges),
		netcheck.Hairpin(d.Bridges),
		netcheck.KubeProxyRules(d.kubeProxy()),
		netcheck.KubeProxyHealth(d.kubeProxy()),
		netcheck.IPTablesBackends(d.kubeProxy()),
		netcheck.ForwardPolicy(d.kubeProxy(), d.podRanges()),
		netcheck.PodCIDRRoute(d.Services, d.Routes),
		netcheck.ClusterDNS(d.clusterDNS(kubelets)),
		netcheck.Conntrack(d.HostFS, d.Conntrack),
		cri.RuntimeCheck(d.CRI),
		cri.RuntimeReadyCheck(d.CRI),
		cri.NetworkReadyCheck(d.CRI, d.HostFS),
		cri.SandboxImageCheck(d.CRI),
		cri.CrashLoopCheck(d.CRI, d.HostFS, d.APIPods),
		cri.RestartLoopCheck(d.CRI, d.APIPods),
		cri.OOMKilledCheck(d.CRI),
		cri.SandboxCheck(d.CRI, d.APIPods),
		cri.StuckCheck(d.CRI),
		cri.InventoryCheck(d.CRI),
		kubelet.HealthCheck(kubelet.HealthDeps{FS: d.HostFS, Processes: kubelets, API: d.Node, Clock: d.Clock}),
		kernel.Log(d.HostFS, d.Clock, d.Pods),
		plugin.Plugins(d.tickerClock()),
	}
	out := make([]*check.Definition, len(defs))
	for i := range defs {
		out[i] = &defs[i]
	}
	return out
}
