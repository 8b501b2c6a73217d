package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// hostSysctls are the host settings kubelet, kube-proxy and the bridge CNI
// plugin may change. Their values are recorded before start and restored on
// teardown; kubelet for one sets kernel.panic and kernel.panic_on_oops.
var hostSysctls = []string{
	"net.ipv4.ip_forward",
	"net.ipv4.conf.all.forwarding",
	"net.ipv6.conf.all.forwarding",
	"net.ipv4.conf.all.route_localnet",
	"net.bridge.bridge-nf-call-iptables",
	"net.bridge.bridge-nf-call-ip6tables",
	"net.netfilter.nf_conntrack_max",
	"net.netfilter.nf_conntrack_tcp_timeout_established",
	"net.netfilter.nf_conntrack_tcp_timeout_close_wait",
	"net.netfilter.nf_conntrack_tcp_be_liberal",
	"vm.overcommit_memory",
	"vm.panic_on_oom",
	"kernel.panic",
	"kernel.panic_on_oops",
	"kernel.keys.root_maxkeys",
	"kernel.keys.root_maxbytes",
}

func sysctlPath(name string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
}

func readSysctls() map[string]string {
	m := map[string]string{}
	for _, s := range hostSysctls {
		if b, err := os.ReadFile(sysctlPath(s)); err == nil {
			m[s] = strings.TrimSpace(string(b))
		}
	}
	return m
}

// restoreSysctls writes back every recorded value that changed.
func restoreSysctls(orig map[string]string) ([]string, error) {
	var changed []string
	var errs []error
	keys := make([]string, 0, len(orig))
	for k := range orig {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b, err := os.ReadFile(sysctlPath(k))
		if err != nil || strings.TrimSpace(string(b)) == orig[k] {
			continue
		}
		if err := os.WriteFile(sysctlPath(k), []byte(orig[k]), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", k, orig[k], err))
			continue
		}
		changed = append(changed, fmt.Sprintf("%s=%s (was %s)", k, orig[k], strings.TrimSpace(string(b))))
	}
	return changed, joinErrs(errs)
}

// ipRoute is the subset of `ip -j route` output the harness reads.
type ipRoute struct {
	Dst  string `json:"dst"`
	Type string `json:"type"`
	Dev  string `json:"dev"`
}

func hostRoutes(ctx context.Context) ([]ipRoute, error) {
	out, err := run(ctx, "ip", "-j", "-4", "route", "show", "table", "all")
	if err != nil {
		return nil, err
	}
	var rs []ipRoute
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		return nil, fmt.Errorf("parse ip route: %w", err)
	}
	return rs, nil
}

// checkRanges refuses CIDRs that overlap a route the host already has, so
// the harness never steals or shadows real traffic.
func checkRanges(ctx context.Context, cidrs ...string) error {
	routes, err := hostRoutes(ctx)
	if err != nil {
		return err
	}
	for _, c := range cidrs {
		_, want, err := net.ParseCIDR(c)
		if err != nil {
			return fmt.Errorf("parse %q: %w", c, err)
		}
		for _, r := range routes {
			if r.Dst == "default" || r.Type == "local" || r.Type == "broadcast" || r.Dst == "" {
				continue
			}
			dst := r.Dst
			if !strings.Contains(dst, "/") {
				dst += "/32"
			}
			_, have, err := net.ParseCIDR(dst)
			if err != nil {
				continue
			}
			if have.Contains(want.IP) || want.Contains(have.IP) {
				return fmt.Errorf("range %s overlaps host route %s dev %s", c, r.Dst, r.Dev)
			}
		}
	}
	return nil
}

func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

func loHasAddr(ip string) bool {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return false
	}
	addrs, _ := lo.Addrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.String() == ip {
			return true
		}
	}
	return false
}

// deleteBridge removes cni0 and any veth still enslaved to it.
func deleteBridge(ctx context.Context, name string) error {
	if !linkExists(name) {
		return nil
	}
	out, err := run(ctx, "ip", "-j", "link", "show", "master", name)
	if err == nil {
		var links []struct {
			Ifname string `json:"ifname"`
		}
		if json.Unmarshal([]byte(out), &links) == nil {
			for _, l := range links {
				_, _ = run(ctx, "ip", "link", "del", l.Ifname)
			}
		}
	}
	if _, err := run(ctx, "ip", "link", "del", name); err != nil {
		return fmt.Errorf("delete bridge %s: %w", name, err)
	}
	return nil
}

// mountsUnder lists mount points below any of the prefixes, deepest first.
func mountsUnder(prefixes ...string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	var mps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		for _, p := range prefixes {
			if mp == p || strings.HasPrefix(mp, strings.TrimSuffix(p, "/")+"/") {
				mps = append(mps, mp)
				break
			}
		}
	}
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	return mps, sc.Err()
}

func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// unmountUnder lazily unmounts everything below the prefixes.
func unmountUnder(prefixes ...string) error {
	var errs []error
	for i := 0; i < 3; i++ {
		mps, err := mountsUnder(prefixes...)
		if err != nil {
			return err
		}
		if len(mps) == 0 {
			return nil
		}
		errs = nil
		for _, mp := range mps {
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
				errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
			}
		}
	}
	return joinErrs(errs)
}

func dirEntries(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func pathExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func haveCmd(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}

// ensureBridgeNetfilter makes bridged pod traffic go through iptables, as
// kube-proxy requires for a pod reaching a Service backed by a pod on the
// same bridge: the reply must be un-DNATed. The sysctl is in hostSysctls,
// so its old value is restored on teardown.
func ensureBridgeNetfilter(ctx context.Context) error {
	p := sysctlPath("net.bridge.bridge-nf-call-iptables")
	if !pathExists(p) {
		if _, err := run(ctx, "modprobe", "br_netfilter"); err != nil {
			return fmt.Errorf("br_netfilter: %w", err)
		}
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("br_netfilter: %w", err)
	}
	if strings.TrimSpace(string(b)) != "1" {
		if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("set bridge-nf-call-iptables: %w", err)
		}
	}
	return nil
}

// Policy routing that keeps pod traffic on the node: pod-to-pod traffic
// uses the main table, anything else from a pod (a DNS lookup, a stray
// connection) hits an unreachable default instead of leaving by eth0.
// Locally delivered traffic (the node IP, a DNATed Service) is decided by
// the local table before these rules, so it is unaffected.
const (
	podRulePriority = 4241
	podRouteTable   = "4242"
)

func confinePods(ctx context.Context, st *State, podCIDR string) error {
	out, err := run(ctx, "ip", "rule", "show")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, fmt.Sprintf("%d:", podRulePriority)) || strings.HasPrefix(l, fmt.Sprintf("%d:", podRulePriority+1)) {
			return fmt.Errorf("ip rule priority %d/%d already in use: %s", podRulePriority, podRulePriority+1, l)
		}
	}
	steps := []struct{ add, del []string }{
		{[]string{"route", "add", "unreachable", "default", "table", podRouteTable},
			[]string{"route", "del", "unreachable", "default", "table", podRouteTable}},
		{[]string{"rule", "add", "from", podCIDR, "to", podCIDR, "lookup", "main", "priority", fmt.Sprint(podRulePriority)},
			[]string{"rule", "del", "priority", fmt.Sprint(podRulePriority)}},
		{[]string{"rule", "add", "from", podCIDR, "lookup", podRouteTable, "priority", fmt.Sprint(podRulePriority + 1)},
			[]string{"rule", "del", "priority", fmt.Sprint(podRulePriority + 1)}},
	}
	for _, step := range steps {
		if _, err := run(ctx, "ip", step.add...); err != nil {
			return err
		}
		// Undone in reverse order on teardown.
		st.Undo = append([][]string{step.del}, st.Undo...)
		if err := st.save(); err != nil {
			return err
		}
	}
	return nil
}
