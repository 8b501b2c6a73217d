package netcheck

import (
	"github.com/node-doctor/node-doctor/pkg/kubeproxy"

	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"path"
	"strings"
	"sync"
	"syscall"
)

// Pod range sources, as findings name them.
const (
	RangeFromSetting   = "the podCIDRs setting"
	RangeFromNode      = "the Node's spec.podCIDRs"
	RangeFromKubeProxy = "kube-proxy's clusterCIDR"
	RangeFromCNI       = "the CNI config"
	RangeFromPodIP     = "the IP of pod"
)

// PodRange is one pod address range and where it was learnt.
type PodRange struct {
	Prefix netip.Prefix
	// Source is one of the RangeFrom* names, and Origin what exactly
	// (the CNI config file, the pod).
	Source, Origin string
}

// String is "10.244.0.0/24 (the CNI config /etc/cni/net.d/10-bridge.conflist)".
func (r PodRange) String() string {
	src := r.Source
	if r.Origin != "" {
		src += " " + r.Origin
	}
	return r.Prefix.String() + " (" + src + ")"
}

// PodRanges gives a check the pod address ranges of this node.
type PodRanges interface {
	PodRanges(ctx context.Context) ([]PodRange, error)
}

// PodAddr is the IP of a pod running on this node.
type PodAddr struct {
	IP  netip.Addr
	Pod string // namespace/name
}

// PodAddrLister lists the IPs of the pods on this node (CRI sandbox status).
type PodAddrLister interface {
	PodAddrs(ctx context.Context) ([]PodAddr, error)
}

// ClusterCIDRs is the optional KubeProxyAPI capability of reading
// kube-proxy's clusterCIDR.
type ClusterCIDRs interface {
	ClusterCIDRs(ctx context.Context) ([]string, error)
}

// PodRangeSources finds pod ranges in every place a node may keep them, so
// a node whose IPAM does not fill spec.podCIDRs still has ranges. Each
// field may be nil.
type PodRangeSources struct {
	Node      kubeproxy.ServiceLister
	KubeProxy kubeproxy.KubeProxyAPI
	// FS is the node's root, CNIConfDir where the runtime reads CNI config
	// (nil or "": DefaultCNIConfDir; an error: the runtime did not say).
	FS         fs.FS
	CNIConfDir func(ctx context.Context) (string, error)
	Pods       PodAddrLister
}

// ErrRangeSourceAbsent marks a source that is not on this node at all (no
// container runtime, kube-proxy not listening): its last ranges are kept,
// as for a failure, but it is not why the ranges are unknown.
var ErrRangeSourceAbsent = errors.New("not on this node")

// absent says err means the source is not there rather than broken.
func absent(err error) bool {
	return errors.Is(err, ErrRangeSourceAbsent) || errors.Is(err, syscall.ECONNREFUSED)
}

// maxPodAddrs bounds the pod IPs kept when no range covers them.
const maxPodAddrs = 16

// PodRanges returns the ranges of every source that answers, each as its
// source gave it (see SelectPodRanges). It fails only when no source gave a
// range and one that exists failed.
func (s PodRangeSources) PodRanges(ctx context.Context) ([]PodRange, error) {
	out, _, err := s.podRanges(ctx)
	return out, err
}

// podRanges also says which sources failed.
func (s PodRangeSources) podRanges(ctx context.Context) ([]PodRange, map[string]bool, error) {
	var out []PodRange
	var errs []error
	failed := map[string]bool{}
	add := func(p netip.Prefix, src, origin string) {
		out = append(out, PodRange{Prefix: p.Masked(), Source: src, Origin: origin})
	}
	if s.Node != nil {
		if n, err := s.Node.Node(); err != nil {
			failed[RangeFromNode] = true // not synced yet: no error, Node IPAM is optional
		} else if n != nil {
			cidrs := n.Spec.PodCIDRs
			if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
				cidrs = []string{n.Spec.PodCIDR}
			}
			for _, p := range parsePrefixes(cidrs) {
				add(p, RangeFromNode, "")
			}
		}
	}
	if kp, ok := s.KubeProxy.(ClusterCIDRs); ok {
		if cidrs, err := kp.ClusterCIDRs(ctx); err == nil {
			for _, p := range parsePrefixes(cidrs) {
				add(p, RangeFromKubeProxy, "")
			}
		} else {
			failed[RangeFromKubeProxy] = true
			if !absent(err) {
				errs = append(errs, err)
			}
		}
	}
	if s.FS != nil {
		dir := DefaultCNIConfDir
		var err error
		if s.CNIConfDir != nil {
			var d string
			if d, err = s.CNIConfDir(ctx); d != "" {
				dir = d
			}
		}
		var rs []PodRange
		if err == nil {
			rs, err = cniRanges(s.FS, dir)
		}
		if err != nil {
			errs, failed[RangeFromCNI] = append(errs, err), true
		}
		for _, r := range rs {
			add(r.Prefix, RangeFromCNI, r.Origin)
		}
	}
	if s.Pods != nil {
		addrs, err := s.Pods.PodAddrs(ctx)
		if err != nil {
			failed[RangeFromPodIP] = true
			if !absent(err) {
				errs = append(errs, err)
			}
		}
		for _, a := range addrs {
			add(netip.PrefixFrom(a.IP, a.IP.BitLen()), RangeFromPodIP, a.Pod)
		}
	}
	if len(out) == 0 && len(errs) > 0 {
		return nil, failed, fmt.Errorf("pod ranges: %w", errors.Join(errs...))
	}
	return out, failed, nil
}

// LastGoodRanges keeps, per source, the ranges of its last answer, so a
// source that fails for a while (kube-proxy restarting, a slow runtime)
// still gives the ranges it gave before: they change far more rarely than
// their sources restart.
type LastGoodRanges struct {
	Sources PodRangeSources
	mu      sync.Mutex
	last    map[string][]PodRange
}

// PodRanges implements PodRanges.
func (l *LastGoodRanges) PodRanges(ctx context.Context) ([]PodRange, error) {
	rs, failed, err := l.Sources.podRanges(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = map[string][]PodRange{}
	}
	fresh := map[string][]PodRange{}
	for _, r := range rs {
		fresh[r.Source] = append(fresh[r.Source], r)
	}
	var out []PodRange
	for _, src := range []string{RangeFromNode, RangeFromKubeProxy, RangeFromCNI, RangeFromPodIP} {
		if failed[src] {
			out = append(out, l.last[src]...)
			continue
		}
		l.last[src] = fresh[src]
		out = append(out, fresh[src]...)
	}
	if len(out) == 0 && err != nil {
		return nil, err
	}
	return out, nil
}

// Range source names of the forward-policy rangeSources setting.
var rangeSourceNames = map[string]string{
	"node": RangeFromNode, "kube-proxy": RangeFromKubeProxy, "cni": RangeFromCNI, "pods": RangeFromPodIP,
}

// SelectPodRanges keeps the ranges of the named sources (nil: all), each
// prefix once (the first source wins, in the order Node, kube-proxy, CNI,
// pods), and pod IPs only where no kept range covers them, at most
// maxPodAddrs.
func SelectPodRanges(all []PodRange, sources []string) []PodRange {
	want := map[string]bool{}
	for _, n := range sources {
		want[rangeSourceNames[n]] = true
	}
	var out []PodRange
	seen := map[netip.Prefix]bool{}
	for _, r := range all {
		if (len(want) > 0 && !want[r.Source]) || r.Source == RangeFromPodIP || seen[r.Prefix] {
			continue
		}
		seen[r.Prefix] = true
		out = append(out, r)
	}
	n := 0
	for _, r := range all {
		if r.Source != RangeFromPodIP || (len(want) > 0 && !want[r.Source]) || seen[r.Prefix] || covered(r.Prefix.Addr(), out) || n >= maxPodAddrs {
			continue
		}
		seen[r.Prefix] = true
		n++
		out = append(out, r)
	}
	return out
}

func covered(a netip.Addr, rs []PodRange) bool {
	for _, r := range rs {
		if r.Prefix.Contains(a) {
			return true
		}
	}
	return false
}

// cniRanges reads the ranges of every config in the CNI config directory
// (the runtime uses the first in name order; the others are likely to be
// stale but their pods may still run).
func cniRanges(fsys fs.FS, dir string) ([]PodRange, error) {
	rel := strings.TrimPrefix(path.Clean(dir), "/")
	entries, err := fs.ReadDir(fsys, rel)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("read CNI config dir %s: %w", dir, err)
	}
	var out []PodRange
	for _, e := range entries {
		switch path.Ext(e.Name()) {
		case ".conf", ".conflist", ".json":
		default:
			continue
		}
		b, err := fs.ReadFile(fsys, path.Join(rel, e.Name()))
		if err != nil {
			return out, fmt.Errorf("read CNI config: %w", err)
		}
		ps, err := ParseCNIRanges(b)
		if err != nil {
			continue // not ours to judge here: network-ready says so
		}
		for _, p := range ps {
			out = append(out, PodRange{Prefix: p, Source: RangeFromCNI, Origin: path.Join(dir, e.Name())})
		}
	}
	return out, nil
}
