package kubeproxy

import (
	"github.com/node-doctor/node-doctor/pkg/dataplane"

	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/utils/clock"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// KubeProxySettings say where kube-proxy answers and how long a difference
// may last before it counts.
type KubeProxySettings struct {
	// MetricsAddress serves /proxyMode and /metrics (kube-proxy --metrics-bind-address).
	MetricsAddress string `yaml:"metricsAddress"`
	// HealthAddress serves /healthz (kube-proxy --healthz-bind-address).
	HealthAddress string `yaml:"healthAddress"`
	// Mode overrides /proxyMode: iptables, nftables or ipvs; empty asks kube-proxy.
	Mode string `yaml:"mode"`
	// Grace: a difference seen for this long counts even when kube-proxy's
	// sync state is unknown.
	Grace time.Duration `yaml:"grace"`
	// Settle: a difference counts at once when kube-proxy has synced
	// everything it was told and nothing about the service changed for this long.
	Settle time.Duration `yaml:"settle"`
	// MaxFindings caps the per-service findings of one run.
	MaxFindings int `yaml:"maxFindings"`
}

// Validate range-checks the settings.
func (s *KubeProxySettings) Validate() error {
	switch s.Mode {
	case "", "iptables", "nftables", "ipvs":
	default:
		return fmt.Errorf("mode %q is not one of iptables, nftables, ipvs (or empty to ask kube-proxy)", s.Mode)
	}
	if s.Grace < time.Second || s.Grace > time.Hour {
		return fmt.Errorf("grace %s is not between 1s and 1h", s.Grace)
	}
	if s.Settle < 0 || s.Settle > 10*time.Minute {
		return fmt.Errorf("settle %s is not between 0 and 10m", s.Settle)
	}
	if s.MaxFindings < 1 || s.MaxFindings > 1000 {
		return fmt.Errorf("maxFindings %d is not between 1 and 1000", s.MaxFindings)
	}
	if s.MetricsAddress == "" || s.HealthAddress == "" {
		return errors.New("metricsAddress and healthAddress must be set")
	}
	return nil
}

// DefaultKubeProxySettings are kube-proxy's default addresses and the check's defaults.
func DefaultKubeProxySettings() *KubeProxySettings {
	return &KubeProxySettings{MetricsAddress: "127.0.0.1:10249", HealthAddress: "127.0.0.1:10256",
		Grace: 30 * time.Second, Settle: 5 * time.Second, MaxFindings: 50}
}

// KubeProxyDeps are the outside systems the kube-proxy checks read.
type KubeProxyDeps struct {
	Services ServiceLister
	IPTables dataplane.IPTablesSaver
	NFT      dataplane.NFTLister
	IPVS     dataplane.IPVSLister
	// Tables is the shared snapshot source; nil: each Snapshot call reads
	// afresh through IPTables, NFT and IPVS (explain, tests).
	Tables *Source
	// KubeProxy nil means HTTP to the addresses in the settings.
	KubeProxy KubeProxyAPI
	Clock     clock.Clock
}

// Snapshot is this round's tables: the shared source's, or a one-off
// snapshot over IPTables and NFT.
func (d KubeProxyDeps) Snapshot() *Snapshot {
	if d.Tables != nil {
		return d.Tables.Snapshot()
	}
	var c clock.PassiveClock = clock.RealClock{}
	if d.Clock != nil {
		c = d.Clock
	}
	return NewSource(dataplane.Readers{IPTables: d.IPTables, NFT: d.NFT, IPVS: d.IPVS}, dataplane.SourceOptions{Clock: c}).Snapshot()
}

// API is the kube-proxy client: KubeProxy, or HTTP to the settings' addresses.
func (d KubeProxyDeps) API(s *KubeProxySettings) KubeProxyAPI {
	if d.KubeProxy != nil {
		return d.KubeProxy
	}
	return KubeProxyHTTP{MetricsURL: "http://" + s.MetricsAddress, HealthURL: "http://" + s.HealthAddress}
}

// Now is the clock's time.
func (d KubeProxyDeps) Now() time.Time {
	if d.Clock == nil {
		return time.Now()
	}
	return d.Clock.Now()
}

// Observed is the programmed state read for one run.
type Observed struct {
	Mode     string
	Progs    map[bool]*Programmed // by ipv6
	KPMode   string               // what /proxyMode said ("" when unreachable)
	KPErr    error
	Backend  string // iptables backend in use
	IPVS     *IPVSNode
	ReadTime time.Duration
	// ReadAt is when the rules were read (the snapshot's start): nothing
	// kube-proxy wrote after it can be in them.
	ReadAt time.Time
}

// ReadProgrammed works out the mode and reads its rules for both families.
func ReadProgrammed(ctx context.Context, d KubeProxyDeps, s *KubeProxySettings, kp KubeProxyAPI) (*Observed, error) {
	obs := &Observed{Progs: map[bool]*Programmed{}}
	snap := d.Snapshot()
	mode := s.Mode
	if mode == "" {
		m, err := kp.ProxyMode(ctx)
		obs.KPMode, obs.KPErr = m, err
		mode = m
	}
	start := time.Now()
	defer func() { obs.ReadTime = time.Since(start) }()
	switch mode {
	case "nftables":
		if err := ReadNFT(ctx, snap, obs); err != nil {
			return nil, err
		}
		if obs.Progs[false] == nil && obs.Progs[true] == nil {
			return nil, fmt.Errorf("kube-proxy says it runs in nftables mode but there is no kube-proxy nftables table")
		}
		nftNodePortIPs(ctx, d, kp, obs)
		obs.Mode = mode
		return obs, nil
	case "iptables":
		found, err := ReadIPT(ctx, snap, obs)
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, fmt.Errorf("kube-proxy says it runs in iptables mode but neither iptables backend has a KUBE-SERVICES chain")
		}
		obs.Mode = mode
		return obs, nil
	case "ipvs":
		if !snap.HasIPVS() {
			return nil, check.NotApplicable("kube-proxy runs in IPVS mode and node-doctor was built without an IPVS reader")
		}
		obs.ReadAt = snap.Time
		st, err := snap.IPVS(ctx)
		if err != nil {
			return nil, err
		}
		p, n := fromIPVS(st)
		if n != nil {
			// Unknown (an older kube-proxy, or no answer): expect kube-proxy's default.
			n.NodePortAddresses, _ = kp.NodePortAddresses(ctx)
		}
		obs.Mode, obs.Progs[false], obs.Progs[true], obs.IPVS = mode, p[false], p[true], n
		return obs, nil
	case "kernelspace":
		return nil, check.NotApplicable("kube-proxy runs in kernelspace (Windows) mode")
	}
	if mode != "" {
		return nil, fmt.Errorf("kube-proxy reports unknown mode %q", mode)
	}
	// kube-proxy did not answer: look at what is programmed.
	if err := ReadNFT(ctx, snap, obs); err != nil {
		return nil, err
	}
	if obs.Progs[false] != nil || obs.Progs[true] != nil {
		nftNodePortIPs(ctx, d, kp, obs)
		obs.Mode = "nftables"
		return obs, nil
	}
	found, err := ReadIPT(ctx, snap, obs)
	if err != nil {
		return nil, err
	}
	if found {
		obs.Mode = "iptables"
		return obs, nil
	}
	return nil, check.NotApplicable("kube-proxy is not running here (nothing answers on %s: %v) and no kube-proxy rules are programmed; "+
		"Services on this node are implemented by something else (e.g. a CNI that replaces kube-proxy)", s.MetricsAddress, obs.KPErr)
}

// ReadNFT takes the kube-proxy nftables table of both families from the
// snapshot.
func ReadNFT(ctx context.Context, snap *Snapshot, obs *Observed) error {
	if !snap.HasNFT() {
		return nil
	}
	obs.ReadAt = snap.Time
	for _, v6 := range []bool{false, true} {
		p, ok, err := snap.NFT(ctx, v6)
		if err != nil {
			return err
		}
		if ok {
			obs.Progs[v6] = p
		}
	}
	return nil
}

// nftNodePortIPs gives each family's view the node IPs its nodeport-ips set
// must hold, when that can be known (nodePortSetIPs). The view is copied:
// the snapshot's is shared with other checks.
func nftNodePortIPs(ctx context.Context, d KubeProxyDeps, kp KubeProxyAPI, obs *Observed) {
	if d.Services == nil {
		return
	}
	need := false
	for _, p := range obs.Progs {
		if p != nil && p.Sets[nftNodePortIPsSet] != nil {
			need = true
		}
	}
	if !need {
		return // kube-proxy matches every address: no set to check
	}
	node, err := d.Services.Node()
	if err != nil || node == nil {
		return
	}
	addrs, err := kp.NodePortAddresses(ctx)
	for v6, p := range obs.Progs {
		if p == nil || p.Sets[nftNodePortIPsSet] == nil {
			continue
		}
		if ips := nodePortSetIPs(node, v6, addrs, err == nil); len(ips) > 0 {
			cp := *p
			cp.NodePortIPs = ips
			obs.Progs[v6] = &cp
		}
	}
}

// ReadIPT finds the backend holding KUBE-SERVICES (nft first, as the
// iptables wrapper kube-proxy images ship prefers it) and takes nat and
// filter of both families from it, as the snapshot's collector kept them.
func ReadIPT(ctx context.Context, snap *Snapshot, obs *Observed) (bool, error) {
	if !snap.HasIPTables() {
		return false, nil
	}
	obs.ReadAt = snap.Time
	for _, be := range []string{dataplane.BackendNFT, dataplane.BackendLegacy} {
		r4, err := snap.IPTables(ctx, be, false)
		if err != nil {
			return false, err
		}
		if r4.NATErr != nil {
			if be == dataplane.BackendLegacy {
				continue // no legacy tools or tables
			}
			return false, r4.NATErr
		}
		if r4.NAT.Chain("KUBE-SERVICES") == nil {
			continue
		}
		obs.Backend = be
		if r4.FilterErr != nil {
			return false, r4.FilterErr
		}
		obs.Progs[false] = r4.Compact
		r6, err := snap.IPTables(ctx, be, true)
		if err != nil {
			return false, err
		}
		if r6.NATErr == nil && r6.NAT.Chain("KUBE-SERVICES") != nil {
			if r6.FilterErr != nil {
				return false, r6.FilterErr
			}
			obs.Progs[true] = r6.Compact
		}
		return true, nil
	}
	return false, nil
}
