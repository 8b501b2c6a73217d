package dataplane

import (
	"encoding/binary"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// nlAttr encodes one netlink attribute (native-endian header, padded).
func nlAttr(typ uint16, data []byte) []byte {
	b := make([]byte, 4, 4+len(data)+3)
	binary.NativeEndian.PutUint16(b, uint16(4+len(data)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func nlNest(typ uint16, attrs ...[]byte) []byte {
	return nlAttr(typ|unix.NLA_F_NESTED, slices.Concat(attrs...))
}

func putBE32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func nftMsg(fam uint8, attrs ...[]byte) []byte {
	return append([]byte{fam, 0, 0, 0}, slices.Concat(attrs...)...)
}

func nftExpr(name string, data ...[]byte) []byte {
	return nlNest(unix.NFTA_LIST_ELEM, nlAttr(unix.NFTA_EXPR_NAME, []byte(name+"\x00")), nlNest(unix.NFTA_EXPR_DATA, data...))
}

// The dnat rule kube-proxy writes for one endpoint: immediate addr,
// immediate port, nat.
func inlineDNATRule(chain string, extra ...[]byte) []byte {
	exprs := [][]byte{
		nftExpr("immediate", nlAttr(unix.NFTA_IMMEDIATE_DREG, putBE32(1)), nlNest(unix.NFTA_IMMEDIATE_DATA, nlAttr(unix.NFTA_DATA_VALUE, []byte{198, 51, 100, 10}))),
		nftExpr("immediate", nlAttr(unix.NFTA_IMMEDIATE_DREG, putBE32(2)), nlNest(unix.NFTA_IMMEDIATE_DATA, nlAttr(unix.NFTA_DATA_VALUE, []byte{0x19, 0x2b}))),
		nftExpr("nat", nlAttr(unix.NFTA_NAT_TYPE, putBE32(unix.NFT_NAT_DNAT)), nlAttr(unix.NFTA_NAT_FAMILY, putBE32(unix.NFPROTO_IPV4)),
			nlAttr(unix.NFTA_NAT_REG_ADDR_MIN, putBE32(1)), nlAttr(unix.NFTA_NAT_REG_PROTO_MIN, putBE32(2))),
	}
	exprs = append(exprs, extra...)
	return nftMsg(unix.NFPROTO_IPV4, nlAttr(unix.NFTA_RULE_TABLE, []byte("kube-proxy\x00")), nlAttr(unix.NFTA_RULE_CHAIN, []byte(chain+"\x00")),
		nlNest(unix.NFTA_RULE_EXPRESSIONS, exprs...))
}

func TestDecodeNFTRule(t *testing.T) {
	r, err := DecodeNFTRule(inlineDNATRule("svc"), nil)
	if err != nil || r.Table != "kube-proxy" || r.Chain != "svc" || !slices.Equal(r.DNAT, []string{"198.51.100.10:6443"}) || r.Unknown != nil {
		t.Fatalf("%v %+v", err, r)
	}
	jump := nftExpr("immediate", nlAttr(unix.NFTA_IMMEDIATE_DREG, putBE32(0)), nlNest(unix.NFTA_IMMEDIATE_DATA,
		nlNest(unix.NFTA_DATA_VERDICT, nlAttr(unix.NFTA_VERDICT_CODE, putBE32(uint32(0xfffffffd))), nlAttr(unix.NFTA_VERDICT_CHAIN, []byte("endpoint-x\x00")))))
	r, err = DecodeNFTRule(inlineDNATRule("svc", jump, nftExpr("frobnicate", nlAttr(1, putBE32(7)))), nil)
	if err != nil || !slices.Equal(r.Jumps, []string{"endpoint-x"}) || r.Unknown == nil || r.Unknown.Why != `expression "frobnicate"` || r.Unknown.Raw == "" {
		t.Fatalf("%v %+v %+v", err, r, r.Unknown)
	}
	// A dnat from a map lookup the reader has no values for is unknown.
	lookup := nftExpr("lookup", nlAttr(unix.NFTA_LOOKUP_SET, []byte("__map0\x00")), nlAttr(unix.NFTA_LOOKUP_SREG, putBE32(1)), nlAttr(unix.NFTA_LOOKUP_DREG, putBE32(1)))
	nat := nftExpr("nat", nlAttr(unix.NFTA_NAT_TYPE, putBE32(unix.NFT_NAT_DNAT)), nlAttr(unix.NFTA_NAT_FAMILY, putBE32(unix.NFPROTO_IPV4)), nlAttr(unix.NFTA_NAT_REG_ADDR_MIN, putBE32(1)))
	msg := nftMsg(unix.NFPROTO_IPV4, nlAttr(unix.NFTA_RULE_CHAIN, []byte("svc\x00")), nlNest(unix.NFTA_RULE_EXPRESSIONS, lookup, nat))
	if r, _ := DecodeNFTRule(msg, func(string) [][]string { return nil }); r.Unknown == nil || len(r.DNAT) != 0 {
		t.Fatalf("unresolved map: %+v", r)
	}
	if r, _ := DecodeNFTRule(msg, func(string) [][]string { return [][]string{{"10.0.0.1", "80"}, {"10.0.0.2", "80"}} }); r.Unknown != nil || !slices.Equal(r.DNAT, []string{"10.0.0.1:80", "10.0.0.2:80"}) {
		t.Fatalf("map: %+v", r)
	}
}

func TestDecodeNFTSetElems(t *testing.T) {
	s := NFTSetInfo{Name: "service-ips", Flags: unix.NFT_SET_MAP, KeyType: 7<<12 | 12<<6 | 13, KeyLen: 12, DataType: nftDataVerdict}
	key := nlNest(unix.NFTA_SET_ELEM_KEY, nlAttr(unix.NFTA_DATA_VALUE, []byte{10, 96, 0, 1, 6, 0, 0, 0, 1, 187, 0, 0}))
	data := nlNest(unix.NFTA_SET_ELEM_DATA, nlNest(unix.NFTA_DATA_VERDICT, nlAttr(unix.NFTA_VERDICT_CODE, putBE32(uint32(0xfffffffc))), nlAttr(unix.NFTA_VERDICT_CHAIN, []byte("service-x\x00"))))
	comment := nlAttr(unix.NFTA_SET_ELEM_USERDATA, append([]byte{0, 14}, "default/k:443\x00"...))
	good := nlNest(unix.NFTA_LIST_ELEM, key, data, comment)
	badKey := nlNest(unix.NFTA_LIST_ELEM, nlNest(unix.NFTA_SET_ELEM_KEY, nlAttr(unix.NFTA_DATA_VALUE, []byte{1, 2})), data)
	msg := nftMsg(unix.NFPROTO_IPV4, nlNest(unix.NFTA_SET_ELEM_LIST_ELEMENTS, good, badKey))
	els, unk, err := DecodeNFTSetElems(s, msg)
	if err != nil || len(els) != 1 || len(unk) != 1 {
		t.Fatalf("%v %+v %+v", err, els, unk)
	}
	e := els[0]
	if !slices.Equal(e.Key, []string{"10.96.0.1", "tcp", "443"}) || e.Verdict != "goto" || e.Target != "service-x" || e.Comment != "default/k:443" {
		t.Fatalf("%+v", e)
	}
}

// A named plain set's element is its key (and comment); an interval set's
// elements are kept as unknown.
func TestDecodeNFTPlainSetElems(t *testing.T) {
	s := NFTSetInfo{Name: "hairpin-connections", KeyType: 7<<18 | 7<<12 | 12<<6 | 13, KeyLen: 16}
	key := nlNest(unix.NFTA_SET_ELEM_KEY, nlAttr(unix.NFTA_DATA_VALUE, []byte{10, 244, 0, 2, 10, 244, 0, 2, 17, 0, 0, 0, 0x1f, 0x75, 0, 0}))
	msg := nftMsg(unix.NFPROTO_IPV4, nlNest(unix.NFTA_SET_ELEM_LIST_ELEMENTS, nlNest(unix.NFTA_LIST_ELEM, key)))
	els, unk, err := DecodeNFTSetElems(s, msg)
	if err != nil || len(els) != 1 || len(unk) != 0 || !slices.Equal(els[0].Key, []string{"10.244.0.2", "10.244.0.2", "udp", "8053"}) || els[0].Verdict != "" {
		t.Fatalf("%v %+v %+v", err, els, unk)
	}
	ips := NFTSetInfo{Name: "cluster-ips", KeyType: 7, KeyLen: 4}
	ip := nlNest(unix.NFTA_LIST_ELEM, nlNest(unix.NFTA_SET_ELEM_KEY, nlAttr(unix.NFTA_DATA_VALUE, []byte{10, 96, 0, 1})))
	msg = nftMsg(unix.NFPROTO_IPV4, nlNest(unix.NFTA_SET_ELEM_LIST_ELEMENTS, ip))
	if els, unk, err := DecodeNFTSetElems(ips, msg); err != nil || len(els) != 1 || len(unk) != 0 || !slices.Equal(els[0].Key, []string{"10.96.0.1"}) {
		t.Fatalf("cluster-ips: %v %+v %+v", err, els, unk)
	}
	ips.Flags = unix.NFT_SET_INTERVAL
	if els, unk, _ := DecodeNFTSetElems(ips, msg); len(els) != 0 || len(unk) != 1 || unk[0].Why != "interval set" {
		t.Fatalf("interval set: %+v %+v", els, unk)
	}
	ips.Flags, ips.KeyType = 0, 9 // ether_addr: not rendered
	if els, unk, _ := DecodeNFTSetElems(ips, msg); len(els) != 0 || len(unk) != 1 || unk[0].Raw == "" {
		t.Fatalf("unknown key type: %+v %+v", els, unk)
	}
}

func FuzzDecodeNFTRule(f *testing.F) {
	f.Add(inlineDNATRule("svc"))
	f.Add(inlineDNATRule("svc", nftExpr("frobnicate", nlAttr(1, putBE32(7)))))
	lookup := nftExpr("lookup", nlAttr(unix.NFTA_LOOKUP_SET, []byte("__map0\x00")), nlAttr(unix.NFTA_LOOKUP_SREG, putBE32(1)), nlAttr(unix.NFTA_LOOKUP_DREG, putBE32(1)))
	nat := nftExpr("nat", nlAttr(unix.NFTA_NAT_TYPE, putBE32(unix.NFT_NAT_DNAT)), nlAttr(unix.NFTA_NAT_FAMILY, putBE32(unix.NFPROTO_IPV6)), nlAttr(unix.NFTA_NAT_REG_ADDR_MIN, putBE32(1)))
	f.Add(nftMsg(unix.NFPROTO_IPV6, nlAttr(unix.NFTA_RULE_CHAIN, []byte("svc\x00")), nlNest(unix.NFTA_RULE_EXPRESSIONS, lookup, nat)))
	anon := func(string) [][]string { return [][]string{{"10.0.0.1", "80"}, {"10.0.0.2"}} }
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeNFTRule(b, anon)
		if err != nil {
			return
		}
		if len(r.Chain) > len(b) || len(r.DNAT)+len(r.Jumps) > len(b) {
			t.Fatalf("%d bytes gave %d DNAT, %d jumps", len(b), len(r.DNAT), len(r.Jumps))
		}
		if r.Unknown != nil && len(r.Unknown.Raw) > 2*nftRawMax+3 {
			t.Fatalf("raw form of %d bytes", len(r.Unknown.Raw))
		}
	})
}

func FuzzDecodeNFTSetElems(f *testing.F) {
	key := nlNest(unix.NFTA_SET_ELEM_KEY, nlAttr(unix.NFTA_DATA_VALUE, []byte{10, 96, 0, 1, 6, 0, 0, 0, 1, 187, 0, 0}))
	data := nlNest(unix.NFTA_SET_ELEM_DATA, nlNest(unix.NFTA_DATA_VERDICT, nlAttr(unix.NFTA_VERDICT_CODE, putBE32(uint32(0xfffffffc))), nlAttr(unix.NFTA_VERDICT_CHAIN, []byte("service-x\x00"))))
	comment := nlAttr(unix.NFTA_SET_ELEM_USERDATA, append([]byte{0, 14}, "default/k:443\x00"...))
	f.Add(nftMsg(unix.NFPROTO_IPV4, nlNest(unix.NFTA_SET_ELEM_LIST_ELEMENTS, nlNest(unix.NFTA_LIST_ELEM, key, data, comment))), uint32(7<<12|12<<6|13), uint32(nftDataVerdict), uint32(unix.NFT_SET_MAP))
	// A plain set (cluster-ips) and a concatenated one (hairpin-connections).
	f.Add(nftMsg(unix.NFPROTO_IPV4, nlNest(unix.NFTA_SET_ELEM_LIST_ELEMENTS, nlNest(unix.NFTA_LIST_ELEM,
		nlNest(unix.NFTA_SET_ELEM_KEY, nlAttr(unix.NFTA_DATA_VALUE, []byte{10, 96, 0, 1}))))), uint32(7), uint32(0), uint32(0))
	f.Add(nftMsg(unix.NFPROTO_IPV6, nlNest(unix.NFTA_SET_ELEM_LIST_ELEMENTS, nlNest(unix.NFTA_LIST_ELEM,
		nlNest(unix.NFTA_SET_ELEM_KEY, nlAttr(unix.NFTA_DATA_VALUE, make([]byte, 40))), comment))), uint32(8<<18|8<<12|12<<6|13), uint32(0), uint32(0))
	f.Fuzz(func(t *testing.T, b []byte, keyType, dataType, flags uint32) {
		s := NFTSetInfo{Name: "m", Flags: flags, KeyType: keyType, DataType: dataType}
		els, unk, err := DecodeNFTSetElems(s, b)
		if err != nil {
			return
		}
		if len(els)+len(unk) > len(b) {
			t.Fatalf("%d bytes gave %d elements", len(b), len(els)+len(unk))
		}
		for _, e := range els {
			if len(e.Key) > 6 || len(e.Data) > 6 {
				t.Fatalf("element of %d parts", len(e.Key))
			}
		}
	})
}

func FuzzDecodeNFTSet(f *testing.F) {
	f.Add(nftMsg(unix.NFPROTO_IPV4, nlAttr(unix.NFTA_SET_NAME, []byte("service-ips\x00")), nlAttr(unix.NFTA_SET_FLAGS, putBE32(unix.NFT_SET_MAP)),
		nlAttr(unix.NFTA_SET_KEY_TYPE, putBE32(7<<12|12<<6|13)), nlAttr(unix.NFTA_SET_DATA_TYPE, putBE32(nftDataVerdict))))
	f.Add(nftMsg(unix.NFPROTO_IPV4, nlAttr(unix.NFTA_CHAIN_NAME, []byte("services\x00"))))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeNFTSet(b)
		if err == nil && len(s.Name) > len(b) {
			t.Fatal("name longer than the message")
		}
		table, name, err := DecodeNFTChain(b)
		if err == nil && len(table)+len(name) > len(b) {
			t.Fatal("name longer than the message")
		}
	})
}
