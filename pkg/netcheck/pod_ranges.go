package netcheck

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"path"
	"strings"
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
	Node      ServiceLister
	KubeProxy KubeProxyAPI
	// FS is the node's root, CNIConfDir where the runtime reads CNI config
	// (nil or "": DefaultCNIConfDir).
	FS         fs.FS
	CNIConfDir func(ctx context.Context) string
	Pods       PodAddrLister
}

// maxPodAddrs bounds the pod IPs kept when no range covers them.
const maxPodAddrs = 16

// PodRanges returns the ranges of every source that answers, each as its
// source gave it (see SelectPodRanges). It fails only when every source
// that exists failed.
func (s PodRangeSources) PodRanges(ctx context.Context) ([]PodRange, error) {
	var out []PodRange
	var errs []error
	add := func(p netip.Prefix, src, origin string) {
		out = append(out, PodRange{Prefix: p.Masked(), Source: src, Origin: origin})
	}
	if s.Node != nil {
		if n, err := s.Node.Node(); err == nil && n != nil {
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
			errs = append(errs, err)
		}
	}
	if s.FS != nil {
		dir := DefaultCNIConfDir
		if s.CNIConfDir != nil {
			if d := s.CNIConfDir(ctx); d != "" {
				dir = d
			}
		}
		rs, err := cniRanges(s.FS, dir)
		if err != nil {
			errs = append(errs, err)
		}
		for _, r := range rs {
			add(r.Prefix, RangeFromCNI, r.Origin)
		}
	}
	if s.Pods != nil {
		addrs, err := s.Pods.PodAddrs(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		for _, a := range addrs {
			add(netip.PrefixFrom(a.IP, a.IP.BitLen()), RangeFromPodIP, a.Pod)
		}
	}
	if len(out) == 0 && len(errs) > 0 {
		return nil, fmt.Errorf("pod ranges: %w", errors.Join(errs...))
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
