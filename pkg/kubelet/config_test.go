package kubelet

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func TestParseCmdline(t *testing.T) {
	f, err := ParseCmdline([]string{"/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml", "--root-dir", "/data/kubelet", "-v=2", "--healthz-port", "10300", "--kubeconfig=/etc/kubernetes/kubelet.conf"})
	if err != nil {
		t.Fatal(err)
	}
	if f.Config != "/var/lib/kubelet/config.yaml" || f.RootDir != "/data/kubelet" || f.HealthzPort == nil || *f.HealthzPort != 10300 || f.HealthzAddress != nil {
		t.Errorf("flags %+v", f)
	}
	for _, bad := range [][]string{{"kubelet", "--healthz-port=x"}, {"kubelet", "--healthz-port=70000"}, {"kubelet", "--config"}} {
		if _, err := ParseCmdline(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestHealthzAddress(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	str := func(s string) *string { return &s }
	num := func(n int) *int { return &n }
	for _, tc := range []struct {
		name   string
		config []byte
		flags  Flags
		want   string
		off    bool
		err    string
	}{
		{name: "defaults", want: "127.0.0.1:10248"},
		{name: "yaml file, unspecified address asked on loopback", config: read("kubelet-config.yaml"), want: "127.0.0.1:10258"},
		{name: "json file, IPv6 any", config: read("kubelet-config.json"), want: "[::1]:10248"},
		{name: "flags override the file", config: read("kubelet-config.yaml"), flags: Flags{HealthzAddress: str("10.0.0.5"), HealthzPort: num(10400)}, want: "10.0.0.5:10400"},
		{name: "port 0 turns healthz off", config: []byte("healthzPort: 0\n"), off: true},
		{name: "bad file", config: []byte("healthzPort: [\n"), err: "kubelet config file"},
		{name: "hostname", flags: Flags{HealthzAddress: str("localhost")}, err: "not an IP address"},
		{name: "port out of range", config: []byte("healthzPort: 99999\n"), err: "not a port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, on, err := HealthzAddress(tc.config, tc.flags)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || on == tc.off || got != tc.want {
				t.Fatalf("HealthzAddress = %q, %v, %v; want %q, on %v", got, on, err, tc.want, !tc.off)
			}
		})
	}
}

func TestParseStat(t *testing.T) {
	b, err := os.ReadFile("testdata/stat")
	if err != nil {
		t.Fatal(err)
	}
	state, ticks, err := ParseStat(b)
	if err != nil || state != 'S' || ticks != 19 {
		t.Fatalf("ParseStat = %c %d %v", state, ticks, err)
	}
	// A name with spaces and parentheses.
	state, ticks, err = ParseStat([]byte("42 (a) (b c) T 1 42 42 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 777 1000 10 18446744073709551615"))
	if err != nil || state != 'T' || ticks != 777 {
		t.Fatalf("ParseStat odd name = %c %d %v", state, ticks, err)
	}
	for _, bad := range []string{"", "1 (x", "1 (x) S 1 2", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 notanumber"} {
		if _, _, err := ParseStat([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func FuzzParseStat(f *testing.F) {
	if b, err := os.ReadFile("testdata/stat"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("1 ((x)) R 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5"))
	f.Fuzz(func(t *testing.T, b []byte) {
		state, _, err := ParseStat(b)
		if err == nil && state == 0 {
			t.Fatalf("no error and no state for %q", b)
		}
	})
}

func FuzzHealthzAddress(f *testing.F) {
	for _, n := range []string{"testdata/kubelet-config.yaml", "testdata/kubelet-config.json"} {
		if b, err := os.ReadFile(n); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("healthzBindAddress: 1.2.3.4\nhealthzPort: 0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		addr, on, err := HealthzAddress(b, Flags{})
		if err == nil && on && addr == "" {
			t.Fatalf("on with no address for %q", b)
		}
		if err == nil && !on && addr != "" {
			t.Fatalf("off with address %q", addr)
		}
	})
}

func TestParseDNSConfig(t *testing.T) {
	yamlFile, err := os.ReadFile("testdata/kubelet-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ParseCmdline([]string{"kubelet", "--cluster-dns=10.0.0.10,10.0.0.11", "--resolv-conf", "/run/systemd/resolve/resolv.conf"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name                      string
		config                    []byte
		flags                     Flags
		dns, from, domain, resolv string
		resolvFrom                string
		err                       string
	}{
		{name: "defaults", dns: "", from: "the kubelet default (none)", resolv: "/etc/resolv.conf", resolvFrom: "the kubelet default"},
		{name: "file", config: yamlFile, dns: "10.96.0.10", from: "clusterDNS in /etc/kubelet.yaml", domain: "cluster.local", resolv: "/etc/resolv.conf", resolvFrom: "the kubelet default"},
		{name: "flags override", config: yamlFile, flags: f, dns: "10.0.0.10,10.0.0.11", from: "the kubelet's --cluster-dns flag", domain: "cluster.local",
			resolv: "/run/systemd/resolve/resolv.conf", resolvFrom: "the kubelet's --resolv-conf flag"},
		{name: "empty resolvConf", config: []byte(`{"resolvConf": ""}`), from: "the kubelet default (none)", resolvFrom: "resolvConf in /etc/kubelet.yaml"},
		{name: "not an IP", config: []byte("clusterDNS: [kube-dns]\n"), err: "not an IP address"},
		{name: "bad file", config: []byte("clusterDNS: [\n"), err: "kubelet config file /etc/kubelet.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ParseDNSConfig(tc.config, "/etc/kubelet.yaml", tc.flags)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(d.ClusterDNS, ","); got != tc.dns || d.ClusterDNSSource != tc.from || d.ClusterDomain != tc.domain || d.ResolvConf != tc.resolv || d.ResolvConfFrom != tc.resolvFrom {
				t.Errorf("got %+v", d)
			}
		})
	}
}

func TestDNSSource(t *testing.T) {
	now := time.Now()
	procs := &fakeProcs{ps: []Process{
		{PID: 7, Args: []string{"kubelet", "--config=/etc/old.yaml"}, Started: now.Add(-time.Hour)},
		{PID: 42, Args: []string{"/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml", "--cluster-dns=10.96.0.10"}, Started: now},
	}}
	fsys := fstest.MapFS{"var/lib/kubelet/config.yaml": {Data: []byte("clusterDomain: cluster.local\nresolvConf: /run/systemd/resolve/resolv.conf\n")}}
	d, found, err := DNSSource{FS: fsys, Processes: procs}.KubeletDNS(context.Background())
	if err != nil || !found {
		t.Fatal(found, err)
	}
	if strings.Join(d.ClusterDNS, ",") != "10.96.0.10" || d.ClusterDNSSource != "the kubelet's --cluster-dns flag" || d.ClusterDomain != "cluster.local" ||
		d.ResolvConf != "/run/systemd/resolve/resolv.conf" || d.ResolvConfFrom != "resolvConf in /var/lib/kubelet/config.yaml" {
		t.Errorf("newest kubelet's settings: %+v", d)
	}
	if _, found, err := (DNSSource{FS: fstest.MapFS{}, Processes: procs}).KubeletDNS(context.Background()); !found || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("config file absent: found=%v err=%v, want fs.ErrNotExist", found, err)
	}
	if _, found, err := (DNSSource{FS: fsys, Processes: &fakeProcs{}}).KubeletDNS(context.Background()); found || err != nil {
		t.Errorf("no kubelet: found=%v err=%v", found, err)
	}
}
