package netcheck

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/node-doctor/node-doctor/pkg/check"
)

type fakeBridges struct {
	bridges []Bridge
	err     error
}

func (f fakeBridges) Bridges(context.Context) ([]Bridge, error) { return f.bridges, f.err }

func cni0(hairpin ...bool) Bridge {
	b := Bridge{Name: "cni0", Up: true, Ports: []BridgePort{{Name: "eth1", Kind: "device"}}}
	for i, h := range hairpin {
		b.Ports = append(b.Ports, BridgePort{Name: "veth" + string(rune('a'+i)), Kind: "veth", Hairpin: h})
	}
	return b
}

func cniFile(t *testing.T, name string) *fstest.MapFile {
	t.Helper()
	b, err := os.ReadFile("testdata/cni/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return &fstest.MapFile{Data: b}
}

func sysctls(kv ...string) fstest.MapFS {
	m := fstest.MapFS{}
	for i := 0; i+1 < len(kv); i += 2 {
		m["proc/sys/"+strings.ReplaceAll(kv[i], ".", "/")] = &fstest.MapFile{Data: []byte(kv[i+1] + "\n")}
	}
	return m
}

func run(t *testing.T, d check.Definition) check.Result {
	t.Helper()
	return check.NewRunner([]*check.Definition{&d}, nil, nil).RunOnce(context.Background())[0]
}

// reasons lists "severity:Reason" of each finding.
func reasons(r check.Result) string {
	var s []string
	for _, f := range r.Findings {
		s = append(s, f.Severity.String()+":"+f.Reason)
	}
	return strings.Join(s, ",")
}

func TestIPForward(t *testing.T) {
	cases := map[string]struct {
		fs      fstest.MapFS
		bridges []Bridge
		ipv6    string
		status  check.Status
		want    string
		msg     string
	}{
		"on, pod bridge": {
			fs: sysctls("net.ipv4.ip_forward", "1"), bridges: []Bridge{cni0(true)},
			status: check.StatusOK, want: "ok:IPForwardEnabled",
		},
		"off, pod bridge": {
			fs: sysctls("net.ipv4.ip_forward", "0"), bridges: []Bridge{cni0(true)},
			status: check.StatusProblem, want: "problem:IPForwardDisabled", msg: "sysctl -w net.ipv4.ip_forward=1",
		},
		"off, no pod network": {
			fs:     sysctls("net.ipv4.ip_forward", "0"),
			status: check.StatusWarning, want: "warning:IPForwardDisabled", msg: "no pod network found here",
		},
		"dual-stack CNI config, v6 off": {
			fs: func() fstest.MapFS {
				m := sysctls("net.ipv4.ip_forward", "1", "net.ipv6.conf.all.forwarding", "0")
				m["etc/cni/net.d/10-bridge.conflist"] = cniFile(t, "bridge-dualstack.conflist")
				return m
			}(),
			status: check.StatusProblem, want: "ok:IPForwardEnabled,problem:IPv6ForwardingDisabled",
			msg: "sysctl -w net.ipv6.conf.all.forwarding=1",
		},
		"IPv6 bridge address, v6 on": {
			fs:      sysctls("net.ipv4.ip_forward", "1", "net.ipv6.conf.all.forwarding", "1"),
			bridges: []Bridge{func() Bridge { b := cni0(true); b.GlobalIPv6 = true; return b }()},
			status:  check.StatusOK, want: "ok:IPForwardEnabled,ok:IPv6ForwardingEnabled",
		},
		"IPv6 pods but IPv6 disabled in kernel": {
			fs: func() fstest.MapFS {
				m := sysctls("net.ipv4.ip_forward", "1")
				m["etc/cni/net.d/10-bridge.conflist"] = cniFile(t, "bridge-dualstack.conflist")
				return m
			}(),
			status: check.StatusProblem, want: "ok:IPForwardEnabled,problem:IPv6Disabled",
		},
		"IPv4-only CNI config ignores v6": {
			fs: func() fstest.MapFS {
				m := sysctls("net.ipv4.ip_forward", "1", "net.ipv6.conf.all.forwarding", "0")
				m["etc/cni/net.d/10-bridge.conflist"] = cniFile(t, "bridge-ipv4.conflist")
				return m
			}(),
			status: check.StatusOK, want: "ok:IPForwardEnabled",
		},
		"ipv6 forced off": {
			fs: func() fstest.MapFS {
				m := sysctls("net.ipv4.ip_forward", "1", "net.ipv6.conf.all.forwarding", "0")
				m["etc/cni/net.d/10-bridge.conflist"] = cniFile(t, "bridge-dualstack.conflist")
				return m
			}(),
			ipv6: "false", status: check.StatusOK, want: "ok:IPForwardEnabled",
		},
		"ipv6 forced on": {
			fs:   sysctls("net.ipv4.ip_forward", "1", "net.ipv6.conf.all.forwarding", "0"),
			ipv6: "true", status: check.StatusProblem, want: "ok:IPForwardEnabled,problem:IPv6ForwardingDisabled",
		},
		"sysctl missing": {
			fs: fstest.MapFS{}, status: check.StatusError,
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			d := IPForward(c.fs, fakeBridges{bridges: c.bridges})
			if c.ipv6 != "" {
				d.Settings.(*IPForwardSettings).IPv6 = c.ipv6
			}
			r := run(t, d)
			if r.Status != c.status {
				t.Fatalf("status %s, want %s (findings %s, err %v)", r.Status, c.status, reasons(r), r.Err)
			}
			if c.want != "" && reasons(r) != c.want {
				t.Errorf("findings %s, want %s", reasons(r), c.want)
			}
			if c.msg != "" && !strings.Contains(r.Findings[len(r.Findings)-1].Message, c.msg) {
				t.Errorf("message %q lacks %q", r.Findings[len(r.Findings)-1].Message, c.msg)
			}
			for _, f := range r.Findings {
				if f.Condition != check.ConditionNetworkConfig {
					t.Errorf("%s drives %q", f.Reason, f.Condition)
				}
			}
		})
	}
}

func TestBridgeNetfilter(t *testing.T) {
	cases := map[string]struct {
		fs      fstest.MapFS
		bridges []Bridge
		names   []string
		status  check.Status
		want    string
		msg     string
	}{
		"no bridge": {
			fs: sysctls("net.bridge.bridge-nf-call-iptables", "0"), status: check.StatusNotApplicable,
		},
		"bridge without pods": {
			fs: sysctls("net.bridge.bridge-nf-call-iptables", "0"), bridges: []Bridge{{Name: "br0"}},
			status: check.StatusNotApplicable,
		},
		"module not loaded": {
			fs: sysctls("net.ipv4.ip_forward", "1"), bridges: []Bridge{cni0(true)},
			status: check.StatusProblem, want: "problem:BrNetfilterNotLoaded", msg: "modprobe br_netfilter",
		},
		"on": {
			fs:      sysctls("net.bridge.bridge-nf-call-iptables", "1", "net.bridge.bridge-nf-call-ip6tables", "0"),
			bridges: []Bridge{cni0(true)}, status: check.StatusOK, want: "ok:BridgeNfCallIptablesEnabled",
		},
		"off": {
			fs:      sysctls("net.bridge.bridge-nf-call-iptables", "0"),
			bridges: []Bridge{cni0(true)}, status: check.StatusProblem, want: "problem:BridgeNfCallIptablesDisabled",
			msg: "bridge cni0",
		},
		"ipv6 pods, ip6tables off": {
			fs:      sysctls("net.bridge.bridge-nf-call-iptables", "1", "net.bridge.bridge-nf-call-ip6tables", "0"),
			bridges: []Bridge{func() Bridge { b := cni0(true); b.GlobalIPv6 = true; return b }()},
			status:  check.StatusProblem, want: "ok:BridgeNfCallIptablesEnabled,problem:BridgeNfCallIp6tablesDisabled",
		},
		"named bridge only": {
			fs:      sysctls("net.bridge.bridge-nf-call-iptables", "1"),
			bridges: []Bridge{cni0(true)}, names: []string{"cbr0"}, status: check.StatusNotApplicable,
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			d := BridgeNetfilter(c.fs, fakeBridges{bridges: c.bridges})
			d.Settings.(*BridgeNetfilterSettings).Bridges = c.names
			r := run(t, d)
			if r.Status != c.status {
				t.Fatalf("status %s, want %s (findings %s, err %v)", r.Status, c.status, reasons(r), r.Err)
			}
			if c.want != "" && reasons(r) != c.want {
				t.Errorf("findings %s, want %s", reasons(r), c.want)
			}
			if c.msg != "" && !strings.Contains(r.Findings[len(r.Findings)-1].Message, c.msg) {
				t.Errorf("message %q lacks %q", r.Findings[len(r.Findings)-1].Message, c.msg)
			}
		})
	}
}

func TestHairpin(t *testing.T) {
	promisc := cni0(false, false)
	promisc.Promisc = true
	many := cni0(false, false, false, false, false, false, false)
	cases := map[string]struct {
		bridges []Bridge
		status  check.Status
		want    string
		msg     string
		ports   string
	}{
		"no bridges":     {status: check.StatusNotApplicable},
		"all on":         {bridges: []Bridge{cni0(true, true)}, status: check.StatusOK, want: "ok:HairpinEnabled"},
		"promiscuous":    {bridges: []Bridge{promisc}, status: check.StatusOK, want: "ok:BridgePromiscuous"},
		"one off":        {bridges: []Bridge{cni0(true, false)}, status: check.StatusProblem, want: "problem:HairpinModeOff", msg: "off on 1 of 2 pod ports (vethb)", ports: "vethb"},
		"many off":       {bridges: []Bridge{many}, status: check.StatusProblem, msg: "vethe and 2 more", ports: "vetha,vethb,vethc,vethd,vethe,vethf,vethg"},
		"uplink no veth": {bridges: []Bridge{{Name: "br0", Ports: []BridgePort{{Name: "eth0", Kind: "device"}}}}, status: check.StatusNotApplicable},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			r := run(t, Hairpin(fakeBridges{bridges: c.bridges}))
			if r.Status != c.status {
				t.Fatalf("status %s, want %s (findings %s, err %v)", r.Status, c.status, reasons(r), r.Err)
			}
			if c.want != "" && reasons(r) != c.want {
				t.Errorf("findings %s, want %s", reasons(r), c.want)
			}
			if c.msg != "" && !strings.Contains(r.Findings[0].Message, c.msg) {
				t.Errorf("message %q lacks %q", r.Findings[0].Message, c.msg)
			}
			if c.ports != "" && r.Findings[0].Details["ports"] != c.ports {
				t.Errorf("details ports = %q, want %q", r.Findings[0].Details["ports"], c.ports)
			}
		})
	}
}

func TestBridgeListerErrorIsCouldNotRun(t *testing.T) {
	bl := fakeBridges{err: errors.New("netlink: list links: operation not permitted")}
	for _, d := range []check.Definition{IPForward(sysctls("net.ipv4.ip_forward", "1"), bl), BridgeNetfilter(fstest.MapFS{}, bl), Hairpin(bl)} {
		if r := run(t, d); r.Status != check.StatusError {
			t.Errorf("%s: status %s, want error", d.Name, r.Status)
		}
	}
}

func TestCNIConfigHasIPv6(t *testing.T) {
	for file, want := range map[string]bool{
		"bridge-ipv4.conflist": false, "bridge-dualstack.conflist": true, "flannel.conflist": false,
	} {
		b, err := os.ReadFile("testdata/cni/" + file)
		if err != nil {
			t.Fatal(err)
		}
		if got := cniConfigHasIPv6(b); got != want {
			t.Errorf("%s: %v, want %v", file, got, want)
		}
	}
	if cniConfigHasIPv6([]byte("{not json")) {
		t.Error("garbage taken as IPv6")
	}
}
