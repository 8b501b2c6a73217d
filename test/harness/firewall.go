package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
)

// Firewall leftovers: kube-proxy --cleanup removes the proxy's own rules,
// but kubelet's canary/hint chains and any chain a crashed run left behind
// need the generic sweep below. Only chains and tables that did not exist
// before the harness started are touched.

var iptablesTables = []string{"filter", "nat", "mangle"}

// ownedChain reports whether a chain is one the node components create.
func ownedChain(name string) bool {
	return strings.HasPrefix(name, "KUBE-") || strings.HasPrefix(name, "CNI-")
}

// iptablesChains returns "binary/table" -> owned chain names present now.
func iptablesChains(ctx context.Context) map[string][]string {
	m := map[string][]string{}
	for _, bin := range []string{"iptables", "ip6tables"} {
		if !haveCmd(bin + "-save") {
			continue
		}
		for _, t := range iptablesTables {
			out, err := run(ctx, bin+"-save", "-t", t)
			if err != nil {
				continue
			}
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, ":") {
					name := strings.Fields(line[1:])[0]
					if ownedChain(name) {
						m[bin+"/"+t] = append(m[bin+"/"+t], name)
					}
				}
			}
		}
	}
	return m
}

// sweepIptables deletes owned chains created since before, and every rule
// that jumps to them, with one atomic iptables-restore per table.
func sweepIptables(ctx context.Context, before map[string][]string) ([]string, error) {
	var removed []string
	var errs []error
	for _, bin := range []string{"iptables", "ip6tables"} {
		if !haveCmd(bin + "-restore") {
			continue
		}
		for _, t := range iptablesTables {
			key := bin + "/" + t
			old := map[string]bool{}
			for _, c := range before[key] {
				old[c] = true
			}
			out, err := run(ctx, bin+"-save", "-t", t)
			if err != nil {
				continue
			}
			var chains []string
			isNew := map[string]bool{}
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, ":") {
					name := strings.Fields(line[1:])[0]
					if ownedChain(name) && !old[name] {
						chains = append(chains, name)
						isNew[name] = true
					}
				}
			}
			if len(chains) == 0 {
				continue
			}
			var script strings.Builder
			script.WriteString("*" + t + "\n")
			for _, line := range strings.Split(out, "\n") {
				f := strings.Fields(line)
				if len(f) < 2 || f[0] != "-A" || isNew[f[1]] {
					continue
				}
				for i := 0; i+1 < len(f); i++ {
					if (f[i] == "-j" || f[i] == "-g") && isNew[f[i+1]] {
						script.WriteString("-D" + strings.TrimPrefix(line, "-A") + "\n")
						break
					}
				}
			}
			for _, c := range chains {
				script.WriteString("-F " + c + "\n")
			}
			for _, c := range chains {
				script.WriteString("-X " + c + "\n")
			}
			script.WriteString("COMMIT\n")
			cmd := exec.CommandContext(ctx, bin+"-restore", "--noflush")
			cmd.Stdin = strings.NewReader(script.String())
			if b, err := cmd.CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("%s-restore -t %s: %w: %s", bin, t, err, strings.TrimSpace(string(b))))
				continue
			}
			for _, c := range chains {
				removed = append(removed, key+"/"+c)
			}
		}
	}
	return removed, joinErrs(errs)
}

type nftTable struct {
	Family string `json:"family"`
	Name   string `json:"name"`
}

func nftTables(ctx context.Context) []nftTable {
	if !haveCmd("nft") {
		return nil
	}
	out, err := run(ctx, "nft", "-j", "list", "tables")
	if err != nil {
		return nil
	}
	var doc struct {
		Nftables []struct {
			Table *nftTable `json:"table"`
		} `json:"nftables"`
	}
	if json.Unmarshal([]byte(out), &doc) != nil {
		return nil
	}
	var ts []nftTable
	for _, e := range doc.Nftables {
		if e.Table != nil {
			ts = append(ts, *e.Table)
		}
	}
	return ts
}

// sweepNft deletes nft tables created since before: kube-proxy's own, and
// the iptables-nft compat tables kubelet caused, once they hold no rules.
func sweepNft(ctx context.Context, before []nftTable) ([]string, error) {
	old := map[nftTable]bool{}
	for _, t := range before {
		old[t] = true
	}
	var removed []string
	var errs []error
	for _, t := range nftTables(ctx) {
		if old[t] || (t.Family != "ip" && t.Family != "ip6") {
			continue
		}
		if t.Name != "kube-proxy" {
			out, err := run(ctx, "nft", "-j", "list", "table", t.Family, t.Name)
			if err != nil || strings.Contains(out, `"rule"`) {
				continue
			}
		}
		if _, err := run(ctx, "nft", "delete", "table", t.Family, t.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, t.Family+" "+t.Name)
	}
	return removed, joinErrs(errs)
}
