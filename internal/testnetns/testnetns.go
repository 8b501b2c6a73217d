// Package testnetns gives tests a throwaway network namespace with a real
// Linux bridge and veth ports, removed when the test ends.
package testnetns

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// NS is a named network namespace created for one test.
type NS struct {
	Name   string
	Handle netns.NsHandle
	NL     *netlink.Handle
}

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("privileged test: needs root to create a network namespace (CI runs it as root)")
	}
}

// New creates a named namespace ("ip netns" style, so `ip netns exec` works)
// and deletes it at cleanup.
func New(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "nd-test-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() { h.Close() })
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	t.Cleanup(nl.Close)
	return &NS{Name: name, Handle: h, NL: nl}
}

// Exec runs a command inside the namespace and returns its combined output.
func (n *NS) Exec(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns exec %s %v: %v: %s", n.Name, args, err, out)
	}
	return string(out)
}

// Bridge creates a bridge with veth ports (their peers stay in the namespace,
// as a pod's would be in the pod's) and returns the port names.
func (n *NS) Bridge(t testing.TB, name string, ports int, hairpin bool) []string {
	t.Helper()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := n.NL.LinkAdd(br); err != nil {
		t.Fatalf("add bridge %s: %v", name, err)
	}
	if err := n.NL.LinkSetUp(br); err != nil {
		t.Fatalf("up %s: %v", name, err)
	}
	var names []string
	for i := range ports {
		host := name + "-v" + string(rune('a'+i))
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host, MasterIndex: br.Index}, PeerName: host + "p"}
		if err := n.NL.LinkAdd(v); err != nil {
			t.Fatalf("add veth %s: %v", host, err)
		}
		if err := n.NL.LinkSetUp(v); err != nil {
			t.Fatalf("up %s: %v", host, err)
		}
		n.SetHairpin(t, host, hairpin)
		names = append(names, host)
	}
	return names
}

// SetHairpin sets hairpin mode on a bridge port.
func (n *NS) SetHairpin(t testing.TB, port string, on bool) {
	t.Helper()
	l, err := n.NL.LinkByName(port)
	if err != nil {
		t.Fatalf("find %s: %v", port, err)
	}
	if err := n.NL.LinkSetHairpin(l, on); err != nil {
		t.Fatalf("hairpin %s=%v: %v", port, on, err)
	}
}

// SetPromisc turns promiscuous mode on or off.
func (n *NS) SetPromisc(t testing.TB, link string, on bool) {
	t.Helper()
	l, err := n.NL.LinkByName(link)
	if err != nil {
		t.Fatalf("find %s: %v", link, err)
	}
	if on {
		err = n.NL.SetPromiscOn(l)
	} else {
		err = n.NL.SetPromiscOff(l)
	}
	if err != nil {
		t.Fatalf("promisc %s=%v: %v", link, on, err)
	}
}

// Sysctl writes a sysctl inside the namespace (per-netns ones only).
func (n *NS) Sysctl(t testing.TB, name, value string) {
	t.Helper()
	p := "/proc/sys/" + strings.ReplaceAll(name, ".", "/")
	n.Exec(t, "sh", "-c", `echo "$1" > "$2"`, "sh", value, p)
}
