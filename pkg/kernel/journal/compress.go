package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// DefaultMaxFieldSize bounds a field once decompressed; journald's own
// default limit for a whole entry is far below.
const DefaultMaxFieldSize = 64 << 20

// decompressor turns compressed payloads back into fields. It is not safe
// for concurrent use.
type decompressor struct {
	zstd *zstd.Decoder
}

func (d *decompressor) close() {
	if d.zstd != nil {
		d.zstd.Close()
		d.zstd = nil
	}
}

// decompress returns the field in data, decompressed into dst's room if it
// was compressed, and at most limit bytes long.
func (d *decompressor) decompress(data Data, limit int, dst []byte) ([]byte, error) {
	switch data.Flags {
	case 0:
		if len(data.Payload) > limit {
			return nil, fmt.Errorf("journal: field of %d bytes is over the limit of %d", len(data.Payload), limit)
		}
		return data.Payload, nil
	case objectCompressedZSTD:
		if d.zstd == nil {
			z, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(limit)))
			if err != nil {
				return nil, fmt.Errorf("journal: zstd: %w", err)
			}
			d.zstd = z
		}
		out, err := d.zstd.DecodeAll(data.Payload, dst[:0])
		if err != nil {
			return nil, fmt.Errorf("journal: zstd: %w", err)
		}
		if len(out) > limit {
			return nil, fmt.Errorf("journal: field of %d bytes is over the limit of %d", len(out), limit)
		}
		return out, nil
	case objectCompressedLZ4:
		return decodeLZ4(data.Payload, limit, dst)
	case objectCompressedXZ:
		// The decoder allocates the dictionary the stream asks for: refuse
		// one larger than any field may be, so bad data cannot ask for GiBs.
		dict, err := xzDictSize(data.Payload)
		if err != nil {
			return nil, err
		}
		if dict > uint64(max(limit, 8<<20)) {
			return nil, fmt.Errorf("journal: xz: dictionary of %d bytes is over the limit", dict)
		}
		r, err := xz.ReaderConfig{SingleStream: true}.NewReader(bytes.NewReader(data.Payload))
		if err != nil {
			return nil, fmt.Errorf("journal: xz: %w", err)
		}
		buf := bytes.NewBuffer(dst[:0])
		n, err := io.Copy(buf, io.LimitReader(r, int64(limit)+1))
		if err != nil {
			return nil, fmt.Errorf("journal: xz: %w", err)
		}
		if n > int64(limit) {
			return nil, fmt.Errorf("journal: field over the limit of %d bytes", limit)
		}
		return buf.Bytes(), nil
	}
	return nil, fmt.Errorf("journal: unknown compression %#x", data.Flags)
}

var errLZ4 = errors.New("journal: lz4: corrupt block")

// decodeLZ4 decodes journald's LZ4 payload: the decompressed size as a
// 64-bit little-endian number, then one LZ4 block.
func decodeLZ4(src []byte, max int, dst []byte) ([]byte, error) {
	if len(src) < 8 {
		return nil, errLZ4
	}
	size := binary.LittleEndian.Uint64(src)
	if size > uint64(max) {
		return nil, fmt.Errorf("journal: lz4: field of %d bytes is over the limit of %d", size, max)
	}
	src = src[8:]
	out := dst[:0]
	if cap(out) < int(size) {
		out = make([]byte, 0, size)
	}
	for i := 0; i < len(src); {
		token := src[i]
		i++
		lit := int(token >> 4)
		if lit == 15 {
			for {
				if i >= len(src) {
					return nil, errLZ4
				}
				b := src[i]
				i++
				lit += int(b)
				if b != 255 {
					break
				}
			}
		}
		if lit > len(src)-i || len(out)+lit > int(size) {
			return nil, errLZ4
		}
		out = append(out, src[i:i+lit]...)
		i += lit
		if i == len(src) {
			break // the last sequence has literals only
		}
		if i+2 > len(src) {
			return nil, errLZ4
		}
		off := int(binary.LittleEndian.Uint16(src[i:]))
		i += 2
		ml := int(token & 15)
		if ml == 15 {
			for {
				if i >= len(src) {
					return nil, errLZ4
				}
				b := src[i]
				i++
				ml += int(b)
				if b != 255 {
					break
				}
			}
		}
		ml += 4
		if off == 0 || off > len(out) || len(out)+ml > int(size) {
			return nil, errLZ4
		}
		// Byte by byte: the match may overlap what it copies.
		start := len(out) - off
		for k := 0; k < ml; k++ {
			out = append(out, out[start+k])
		}
	}
	if len(out) != int(size) {
		return nil, errLZ4
	}
	return out, nil
}

// xzDictSize reads the LZMA2 dictionary size of an xz stream's first block
// (journald writes one block with the LZMA2 filter alone).
func xzDictSize(b []byte) (uint64, error) {
	errXZ := errors.New("journal: xz: not a stream journald writes")
	const streamHeader = 12
	if len(b) < streamHeader+2 || string(b[:6]) != "\xfd7zXZ\x00" {
		return 0, errXZ
	}
	hdr := b[streamHeader:]
	size := (int(hdr[0]) + 1) * 4
	if hdr[0] == 0 || size > len(hdr) {
		return 0, errXZ
	}
	hdr = hdr[:size]
	flags := hdr[1]
	i := 2
	varint := func() (uint64, bool) {
		var v uint64
		for k := 0; k < 9 && i < len(hdr); k++ {
			c := hdr[i]
			i++
			v |= uint64(c&0x7f) << (7 * k)
			if c&0x80 == 0 {
				return v, true
			}
		}
		return 0, false
	}
	for _, present := range []bool{flags&0x40 != 0, flags&0x80 != 0} { // sizes
		if present {
			if _, ok := varint(); !ok {
				return 0, errXZ
			}
		}
	}
	if flags&0x03 != 0 { // more than one filter
		return 0, errXZ
	}
	id, ok1 := varint()
	n, ok2 := varint()
	if !ok1 || !ok2 || id != 0x21 || n != 1 || i >= len(hdr) {
		return 0, errXZ
	}
	d := hdr[i]
	switch {
	case d > 40:
		return 0, errXZ
	case d == 40:
		return 0xffffffff, nil
	}
	return uint64(2|d&1) << (d/2 + 11), nil
}
