package dataplane

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
)

// NFTTable is what the kube-proxy comparison needs of one nftables table, as
// read from `nft -j list table ip kube-proxy`.
type NFTTable struct {
	Family, Name string
	// Chains by name: whether each exists, its DNAT targets and jumps.
	Chains map[string]*NFTChain
	// Maps by name; each element is "key . parts" -> verdict ("goto chain").
	Maps map[string]*NFTMap
	// Sets by name: the named plain sets (cluster-ips, nodeport-ips,
	// hairpin-connections...); anonymous sets are not kept.
	Sets map[string]*NFTSet
	// Unknown lists what the native reader could not decode (nil from nft -j).
	Unknown []NFTUnknown
}

// NFTChain is one chain's rules reduced to where they send packets.
type NFTChain struct {
	Name  string
	Rules int
	// DNAT lists "ip:port" destinations, inline or from a numgen map.
	DNAT []string
	// Jumps lists chains the chain jumps or goes to.
	Jumps []string
}

// NFTMap is one verdict map.
type NFTMap struct {
	Name     string
	Elements []NFTElement
}

// NFTSet is one named plain set: its elements have a key (and perhaps a
// comment), no verdict.
type NFTSet struct {
	Name     string
	Elements []NFTElement
}

// NFTElement is one key (its concatenated parts, e.g. 10.96.0.1 tcp 443) with
// its verdict and comment.
type NFTElement struct {
	Key     []string
	Verdict string // "goto", "jump", "drop", "accept"...
	Target  string // chain for goto/jump
	Comment string
}

// ParseNFTJSON reads the JSON nft prints for one table.
func ParseNFTJSON(data []byte) (*NFTTable, error) {
	t := NewNFTTable()
	if err := ParseNFTJSONInto(bytes.NewReader(data), t); err != nil {
		return nil, err
	}
	return t, nil
}

// NewNFTTable returns an empty table to parse into.
func NewNFTTable() *NFTTable {
	return &NFTTable{Chains: map[string]*NFTChain{}, Maps: map[string]*NFTMap{}, Sets: map[string]*NFTSet{}}
}

// ParseNFTJSONInto decodes {"nftables": [obj, ...]} one object at a time:
// at 10,000 Services nft prints tens of MB, which is never held whole.
func ParseNFTJSONInto(r io.Reader, t *NFTTable) error {
	dec := json.NewDecoder(r)
	if err := nftDelim(dec, '{'); err != nil {
		return err
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return fmt.Errorf("nft json: %w", err)
		}
		if key != "nftables" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return fmt.Errorf("nft json: %w", err)
			}
			continue
		}
		if err := nftDelim(dec, '['); err != nil {
			return err
		}
		for dec.More() {
			var obj map[string]json.RawMessage
			if err := dec.Decode(&obj); err != nil {
				return fmt.Errorf("nft json: %w", err)
			}
			if err := t.add(obj); err != nil {
				return err
			}
		}
		if err := nftDelim(dec, ']'); err != nil {
			return err
		}
	}
	if err := nftDelim(dec, '}'); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("nft json: data after the document")
	}
	return nil
}

func nftDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("nft json: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("nft json: expected %q, found %v", want, tok)
	}
	return nil
}

func (t *NFTTable) add(obj map[string]json.RawMessage) error {
	for kind, raw := range obj {
		var err error
		switch kind {
		case "table":
			var v struct{ Family, Name string }
			err = json.Unmarshal(raw, &v)
			t.Family, t.Name = v.Family, v.Name
		case "chain":
			var v struct{ Name string }
			err = json.Unmarshal(raw, &v)
			t.chain(v.Name)
		case "map":
			err = t.addMap(raw)
		case "set":
			err = t.addSet(raw)
		case "rule":
			err = t.addRule(raw)
		}
		if err != nil {
			return fmt.Errorf("nft json: %s: %w", kind, err)
		}
	}
	return nil
}

func (t *NFTTable) chain(name string) *NFTChain {
	c := t.Chains[name]
	if c == nil {
		c = &NFTChain{Name: name}
		t.Chains[name] = c
	}
	return c
}

func (t *NFTTable) addMap(raw json.RawMessage) error {
	var v struct {
		Name string
		Elem [][2]json.RawMessage
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	m := &NFTMap{Name: v.Name}
	for _, e := range v.Elem {
		var el NFTElement
		key, comment, err := nftKey(e[0])
		if err != nil {
			return fmt.Errorf("map %s: %w", v.Name, err)
		}
		el.Key, el.Comment = key, comment
		el.Verdict, el.Target = nftVerdict(e[1])
		m.Elements = append(m.Elements, el)
	}
	t.Maps[v.Name] = m
	return nil
}

// addSet keeps a named set's elements: scalars, {"concat": [...]}, or
// either in {"elem": {"val": ..., "comment": ...}} (comments, timeouts).
func (t *NFTTable) addSet(raw json.RawMessage) error {
	var v struct {
		Name string
		Elem []json.RawMessage
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	st := &NFTSet{Name: v.Name}
	for _, e := range v.Elem {
		key, comment, err := nftKey(e)
		if err != nil {
			return fmt.Errorf("set %s: %w", v.Name, err)
		}
		st.Elements = append(st.Elements, NFTElement{Key: key, Comment: comment})
	}
	t.Sets[v.Name] = st
	return nil
}

// nftKey decodes a map key: a scalar, {"concat": [...]}, or either wrapped
// in {"elem": {"val": ..., "comment": ...}}.
func nftKey(raw json.RawMessage) ([]string, string, error) {
	var wrapped struct {
		Elem *struct {
			Val     json.RawMessage `json:"val"`
			Comment string          `json:"comment"`
		} `json:"elem"`
		Concat []json.RawMessage `json:"concat"`
	}
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &wrapped); err != nil {
			return nil, "", err
		}
		if wrapped.Elem != nil {
			k, _, err := nftKey(wrapped.Elem.Val)
			return k, wrapped.Elem.Comment, err
		}
		out := make([]string, 0, len(wrapped.Concat))
		for _, p := range wrapped.Concat {
			out = append(out, nftScalar(p))
		}
		return out, "", nil
	}
	return []string{nftScalar(raw)}, "", nil
}

// nftScalar renders a JSON string or number as nft prints it.
func nftScalar(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return string(raw)
}

// nftVerdict decodes {"goto": {"target": X}}, {"jump": ...}, {"drop": null}.
func nftVerdict(raw json.RawMessage) (string, string) {
	var v map[string]json.RawMessage
	if json.Unmarshal(raw, &v) != nil {
		return nftScalar(raw), ""
	}
	for k, body := range v {
		var tgt struct{ Target string }
		_ = json.Unmarshal(body, &tgt)
		return k, tgt.Target
	}
	return "", ""
}

func (t *NFTTable) addRule(raw json.RawMessage) error {
	var v struct {
		Chain string
		Expr  []map[string]json.RawMessage
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	c := t.chain(v.Chain)
	c.Rules++
	for _, e := range v.Expr {
		for k, body := range e {
			switch k {
			case "goto", "jump":
				var tgt struct{ Target string }
				if err := json.Unmarshal(body, &tgt); err != nil {
					return fmt.Errorf("chain %s: %s: %w", v.Chain, k, err)
				}
				c.Jumps = append(c.Jumps, tgt.Target)
			case "dnat":
				d, err := nftDNAT(body)
				if err != nil {
					return fmt.Errorf("chain %s: dnat: %w", v.Chain, err)
				}
				c.DNAT = append(c.DNAT, d...)
			}
		}
	}
	return nil
}

// nftDNAT decodes {"addr": "IP", "port": N} or a numgen map of
// {"concat": [IP, port]} values.
func nftDNAT(raw json.RawMessage) ([]string, error) {
	var v struct {
		Addr json.RawMessage `json:"addr"`
		Port json.RawMessage `json:"port"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	if len(v.Addr) > 0 && v.Addr[0] == '"' {
		return []string{hostPort(nftScalar(v.Addr), nftScalar(v.Port))}, nil
	}
	var m struct {
		Map struct {
			Data struct {
				Set [][2]json.RawMessage `json:"set"`
			} `json:"data"`
		} `json:"map"`
	}
	if err := json.Unmarshal(v.Addr, &m); err != nil {
		return nil, err
	}
	var out []string
	for _, kv := range m.Map.Data.Set {
		parts, _, err := nftKey(kv[1])
		if err != nil {
			return nil, err
		}
		if len(parts) == 2 {
			out = append(out, hostPort(parts[0], parts[1]))
		}
	}
	return out, nil
}

func hostPort(ip, port string) string {
	if port == "" {
		return ip
	}
	if _, err := strconv.Atoi(port); err != nil {
		return ip + ":" + port
	}
	return net.JoinHostPort(ip, port)
}
