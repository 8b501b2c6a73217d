package dataplane

import (
	"encoding/binary"
	"errors"
)

// nlAttrs walks netlink attributes in place. Decoding a 10,000-Service
// nat table with a copying decoder allocated 2.5 GB per read; this one
// allocates nothing.
type nlAttrs struct {
	b   []byte
	bad bool
}

var errBadAttr = errors.New("malformed netlink attribute")

// next returns the next attribute's type (flags stripped) and value.
func (a *nlAttrs) next() (typ uint16, val []byte, ok bool) {
	if len(a.b) == 0 || a.bad {
		return 0, nil, false
	}
	if len(a.b) < 4 {
		a.bad = true
		return 0, nil, false
	}
	l := int(binary.NativeEndian.Uint16(a.b[0:2]))
	typ = binary.NativeEndian.Uint16(a.b[2:4]) & 0x3fff
	if l < 4 || l > len(a.b) {
		a.bad = true
		return 0, nil, false
	}
	val = a.b[4:l]
	adv := (l + 3) &^ 3
	if adv > len(a.b) {
		adv = len(a.b)
	}
	a.b = a.b[adv:]
	return typ, val, true
}

func (a *nlAttrs) err() error {
	if a.bad {
		return errBadAttr
	}
	return nil
}

// be32 is a 4-byte big-endian attribute value.
func be32(v []byte) (uint32, bool) {
	if len(v) != 4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(v), true
}

// nlString is a NUL-terminated string attribute.
func nlString(v []byte) string { return cString(v) }

// nestedValue is the NFTA_DATA_VALUE inside an NFTA_*_DATA attribute.
func nestedValue(v []byte) ([]byte, bool) {
	a := nlAttrs{b: v}
	for t, x, ok := a.next(); ok; t, x, ok = a.next() {
		if t == 1 { // NFTA_DATA_VALUE
			return x, a.err() == nil
		}
	}
	return nil, false
}
