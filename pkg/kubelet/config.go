package kubelet

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// DefaultHealthzAddress is the kubelet's default healthz address.
const DefaultHealthzAddress = "127.0.0.1:10248"

// Flags are the kubelet command-line flags the check reads.
type Flags struct {
	Config         string
	RootDir        string
	HealthzAddress *string
	HealthzPort    *int
	// ClusterDNS, ClusterDomain and ResolvConf are --cluster-dns,
	// --cluster-domain and --resolv-conf; nil when not given.
	ClusterDNS    *[]string
	ClusterDomain *string
	ResolvConf    *string
}

// ParseCmdline reads the flags of a kubelet command line (Args[0] the
// program), in both --flag=value and --flag value forms. Unparsable values
// are an error naming the flag.
func ParseCmdline(args []string) (Flags, error) {
	var f Flags
	for i := 1; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, val, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch name {
		case "config", "root-dir", "healthz-bind-address", "healthz-port", "cluster-dns", "cluster-domain", "resolv-conf":
		default:
			continue
		}
		if !ok {
			if i+1 >= len(args) {
				return f, fmt.Errorf("kubelet flag --%s has no value", name)
			}
			i++
			val = args[i]
		}
		switch name {
		case "config":
			f.Config = val
		case "root-dir":
			f.RootDir = val
		case "healthz-bind-address":
			f.HealthzAddress = &val
		case "healthz-port":
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 || n > 65535 {
				return f, fmt.Errorf("kubelet flag --healthz-port=%q is not a port", val)
			}
			f.HealthzPort = &n
		case "cluster-dns":
			// A comma-separated list; repeating the flag appends.
			l := []string{}
			if f.ClusterDNS != nil {
				l = *f.ClusterDNS
			}
			for _, a := range strings.Split(val, ",") {
				if a = strings.TrimSpace(a); a != "" {
					l = append(l, a)
				}
			}
			f.ClusterDNS = &l
		case "cluster-domain":
			f.ClusterDomain = &val
		case "resolv-conf":
			f.ResolvConf = &val
		}
	}
	return f, nil
}

// fileConfig is the part of a KubeletConfiguration the check reads.
type fileConfig struct {
	HealthzBindAddress *string   `json:"healthzBindAddress"`
	HealthzPort        *int      `json:"healthzPort"`
	ClusterDNS         *[]string `json:"clusterDNS"`
	ClusterDomain      *string   `json:"clusterDomain"`
	ResolvConf         *string   `json:"resolvConf"`
}

// DefaultResolvConf is the kubelet's default resolvConf.
const DefaultResolvConf = "/etc/resolv.conf"

// DNSConfig is the DNS the kubelet hands to pods: Source names where each
// setting came from ("clusterDNS in /etc/kubernetes/kubelet.yaml", "the
// --cluster-dns flag", "the kubelet default").
type DNSConfig struct {
	ClusterDNS                       []string
	ClusterDomain                    string
	ResolvConf                       string
	ClusterDNSSource, ResolvConfFrom string
}

// ParseDNSConfig reads clusterDNS, clusterDomain and resolvConf from the
// kubelet's config file (path names it in the result; nil config: not
// read) and then its flags, which override the file.
func ParseDNSConfig(config []byte, path string, f Flags) (DNSConfig, error) {
	d := DNSConfig{ResolvConf: DefaultResolvConf, ClusterDNSSource: "the kubelet default (none)", ResolvConfFrom: "the kubelet default"}
	if len(config) > 0 {
		var c fileConfig
		if err := yaml.Unmarshal(config, &c); err != nil {
			return d, fmt.Errorf("kubelet config file %s: %w", path, err)
		}
		if c.ClusterDNS != nil {
			d.ClusterDNS, d.ClusterDNSSource = *c.ClusterDNS, "clusterDNS in "+path
		}
		if c.ClusterDomain != nil {
			d.ClusterDomain = *c.ClusterDomain
		}
		if c.ResolvConf != nil {
			d.ResolvConf, d.ResolvConfFrom = *c.ResolvConf, "resolvConf in "+path
		}
	}
	if f.ClusterDNS != nil {
		d.ClusterDNS, d.ClusterDNSSource = *f.ClusterDNS, "the kubelet's --cluster-dns flag"
	}
	if f.ClusterDomain != nil {
		d.ClusterDomain = *f.ClusterDomain
	}
	if f.ResolvConf != nil {
		d.ResolvConf, d.ResolvConfFrom = *f.ResolvConf, "the kubelet's --resolv-conf flag"
	}
	for _, a := range d.ClusterDNS {
		if net.ParseIP(a) == nil {
			return d, fmt.Errorf("kubelet clusterDNS %q (%s) is not an IP address", a, d.ClusterDNSSource)
		}
	}
	return d, nil
}

// HealthzAddress returns the host:port the kubelet serves /healthz on,
// from its config file (YAML or JSON; nil when not read) and then its
// flags, which the kubelet lets override the file. An unspecified bind
// address is asked on loopback. ok is false when the kubelet serves no
// healthz (port 0).
func HealthzAddress(config []byte, f Flags) (addr string, ok bool, err error) {
	host, port := "127.0.0.1", 10248
	if len(config) > 0 {
		var c fileConfig
		if err := yaml.Unmarshal(config, &c); err != nil {
			return "", false, fmt.Errorf("kubelet config file: %w", err)
		}
		if c.HealthzBindAddress != nil {
			host = *c.HealthzBindAddress
		}
		if c.HealthzPort != nil {
			port = *c.HealthzPort
		}
	}
	if f.HealthzAddress != nil {
		host = *f.HealthzAddress
	}
	if f.HealthzPort != nil {
		port = *f.HealthzPort
	}
	if port < 0 || port > 65535 {
		return "", false, fmt.Errorf("kubelet healthzPort %d is not a port", port)
	}
	if port == 0 {
		return "", false, nil
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	if net.ParseIP(host) == nil {
		return "", false, errors.New("kubelet healthzBindAddress " + strconv.Quote(host) + " is not an IP address")
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), true, nil
}
