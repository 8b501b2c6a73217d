package kubeproxy

import (
	"crypto/sha256"
	"encoding/base32"
	"net"
	"strings"
)

// kube-proxy names its per-service chains after a hash of the service port
// name, so the names are computed here independently and compared with what
// is programmed (verified against real kube-proxy output in the tests).

// ServicePortName is kube-proxy's name of one service port:
// "namespace/name:port", or "namespace/name" when the port is unnamed.
type ServicePortName struct {
	Namespace, Name, Port string
	// Protocol is lower case: tcp, udp or sctp.
	Protocol string
}

func (s ServicePortName) String() string {
	if s.Port == "" {
		return s.Namespace + "/" + s.Name
	}
	return s.Namespace + "/" + s.Name + ":" + s.Port
}

// iptHash is the 16-character base32 prefix of sha256(parts...).
func iptHash(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "")))
	return base32.StdEncoding.EncodeToString(h[:])[:16]
}

// IPTablesChains are the iptables chain names of one service port.
type IPTablesChains struct {
	SVC, SVL, EXT, FW string
}

// IPTablesChainsFor returns the KUBE-SVC-/SVL-/EXT-/FW- chain names.
func IPTablesChainsFor(s ServicePortName) IPTablesChains {
	h := iptHash(s.String(), s.Protocol)
	return IPTablesChains{SVC: "KUBE-SVC-" + h, SVL: "KUBE-SVL-" + h, EXT: "KUBE-EXT-" + h, FW: "KUBE-FW-" + h}
}

// IPTablesEndpointChain returns the KUBE-SEP- chain of an endpoint
// ("ip:port", IPv6 in brackets).
func IPTablesEndpointChain(s ServicePortName, endpoint string) string {
	return "KUBE-SEP-" + iptHash(s.String(), s.Protocol, endpoint)
}

// nftables chain names are capped at 128 bytes; kube-proxy keeps 16 for the
// prefix ("service-", "endpoint-"...).
const nftChainBaseMax = 128 - 16

func nftHashAndTruncate(name string) string {
	h := sha256.Sum256([]byte(name))
	name = base32.StdEncoding.EncodeToString(h[:])[:8] + "-" + name
	if len(name) > nftChainBaseMax {
		name = name[:nftChainBaseMax-3] + "..."
	}
	return name
}

// nftChainBase is "HASH-namespace/name/protocol/port".
func nftChainBase(s ServicePortName) string {
	return nftHashAndTruncate(s.Namespace + "/" + s.Name + "/" + s.Protocol + "/" + s.Port)
}

// NFTablesChains are the nftables chain names of one service port.
type NFTablesChains struct {
	Service, Local, External, Firewall string
}

// NFTablesChainsFor returns the service-/local-/external-/firewall- chains.
func NFTablesChainsFor(s ServicePortName) NFTablesChains {
	b := nftChainBase(s)
	return NFTablesChains{Service: "service-" + b, Local: "local-" + b, External: "external-" + b, Firewall: "firewall-" + b}
}

// NFTablesEndpointChain returns the endpoint- chain name kube-proxy versions
// with per-endpoint chains use.
func NFTablesEndpointChain(s ServicePortName, endpoint string) string {
	ip, port, _ := net.SplitHostPort(endpoint)
	ip = strings.ReplaceAll(ip, ":", ".")
	return "endpoint-" + nftHashAndTruncate(s.Namespace+"/"+s.Name+"/"+s.Protocol+"/"+s.Port+"__"+ip+"/"+port)
}
