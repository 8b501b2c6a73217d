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
// was compressed, and at most max bytes long.
func (d *decompressor) decompress(data Data, max int, dst []byte) ([]byte, error) {
	switch data.Flags {
	case 0:
		if len(data.Payload) > max {
			return nil, fmt.Errorf("journal: field of %d bytes is over the limit of %d", len(data.Payload), max)
		}
		return data.Payload, nil
	case objectCompressedZSTD:
		if d.zstd == nil {
			z, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(max)))
			if err != nil {
				return nil, fmt.Errorf("journal: zstd: %w", err)
			}
			d.zstd = z
		}
		out, err := d.zstd.DecodeAll(data.Payload, dst[:0])
		if err != nil {
			return nil, fmt.Errorf("journal: zstd: %w", err)
		}
		if len(out) > max {
			return nil, fmt.Errorf("journal: field of %d bytes is over the limit of %d", len(out), max)
		}
		return out, nil
	case objectCompressedLZ4:
		return decodeLZ4(data.Payload, max, dst)
	case objectCompressedXZ:
		r, err := xz.NewReader(bytes.NewReader(data.Payload))
		if err != nil {
			return nil, fmt.Errorf("journal: xz: %w", err)
		}
		buf := bytes.NewBuffer(dst[:0])
		n, err := io.Copy(buf, io.LimitReader(r, int64(max)+1))
		if err != nil {
			return nil, fmt.Errorf("journal: xz: %w", err)
		}
		if n > int64(max) {
			return nil, fmt.Errorf("journal: field over the limit of %d bytes", max)
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
