// Package journal reads systemd journal files without libsystemd, following
// the documented on-disk format (https://systemd.io/JOURNAL_FILE_FORMAT/):
// the header, the chain of entry arrays, entry objects and data objects, in
// regular and compact mode, with XZ, LZ4 or ZSTD compressed data.
//
// Files may be written while they are read (state online): a reader stops
// at an entry that is not complete yet and finds it on a later call.
package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Signature starts every journal file.
const Signature = "LPKSHHRH"

// File states.
const (
	StateOffline  = 0
	StateOnline   = 1
	StateArchived = 2
)

// Incompatible header flags.
const (
	IncompatibleXZ        = 1 << 0
	IncompatibleLZ4       = 1 << 1
	IncompatibleKeyedHash = 1 << 2
	IncompatibleZSTD      = 1 << 3
	IncompatibleCompact   = 1 << 4
	knownIncompatible     = IncompatibleXZ | IncompatibleLZ4 | IncompatibleKeyedHash | IncompatibleZSTD | IncompatibleCompact
)

// Object types.
const (
	ObjectData       = 1
	ObjectField      = 2
	ObjectEntry      = 3
	ObjectEntryArray = 6
)

// Object flags: how a data object's payload is compressed.
const (
	objectCompressedXZ   = 1 << 0
	objectCompressedLZ4  = 1 << 1
	objectCompressedZSTD = 1 << 2
)

const (
	// minHeaderSize is the header as systemd 187 wrote it, up to n_data;
	// older files are not read.
	minHeaderSize     = 208
	objectHeaderSize  = 16
	entryHeaderSize   = 64 // object header, seqnum, realtime, monotonic, boot ID, xor hash
	arrayHeaderSize   = 24 // object header, next array offset
	dataPayloadOffset = 64
	// compactDataPayloadOffset adds the tail entry array offset and count.
	compactDataPayloadOffset = 72
)

// ErrIncomplete says an object is not (yet) complete in the file: it lies
// past the end or its header is still zero. In a file being written this is
// the normal end of what can be read now.
var ErrIncomplete = errors.New("journal: object not complete yet")

// Header is the part of a journal file header a reader needs.
type Header struct {
	Incompatible      uint32
	State             uint8
	FileID            [16]byte
	MachineID         [16]byte
	SeqnumID          [16]byte
	HeaderSize        uint64
	ArenaSize         uint64
	TailObjectOffset  uint64
	NObjects          uint64
	NEntries          uint64
	TailEntrySeqnum   uint64
	HeadEntrySeqnum   uint64
	EntryArrayOffset  uint64
	HeadEntryRealtime uint64
	TailEntryRealtime uint64
}

// Compact says entry items and entry array items are 32-bit offsets.
func (h *Header) Compact() bool { return h.Incompatible&IncompatibleCompact != 0 }

// ParseHeader parses the start of a journal file.
func ParseHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < minHeaderSize {
		return h, fmt.Errorf("journal: header: %d bytes, want at least %d", len(b), minHeaderSize)
	}
	if string(b[:8]) != Signature {
		return h, errors.New("journal: header: not a journal file (bad signature)")
	}
	le := binary.LittleEndian
	h.Incompatible = le.Uint32(b[12:])
	h.State = b[16]
	copy(h.FileID[:], b[24:40])
	copy(h.MachineID[:], b[40:56])
	copy(h.SeqnumID[:], b[72:88])
	h.HeaderSize = le.Uint64(b[88:])
	h.ArenaSize = le.Uint64(b[96:])
	h.TailObjectOffset = le.Uint64(b[136:])
	h.NObjects = le.Uint64(b[144:])
	h.NEntries = le.Uint64(b[152:])
	h.TailEntrySeqnum = le.Uint64(b[160:])
	h.HeadEntrySeqnum = le.Uint64(b[168:])
	h.EntryArrayOffset = le.Uint64(b[176:])
	h.HeadEntryRealtime = le.Uint64(b[184:])
	h.TailEntryRealtime = le.Uint64(b[192:])
	if unknown := h.Incompatible &^ knownIncompatible; unknown != 0 {
		return h, fmt.Errorf("journal: header: unknown incompatible flags %#x", unknown)
	}
	if h.HeaderSize < minHeaderSize || h.HeaderSize%8 != 0 {
		return h, fmt.Errorf("journal: header: size %d is not valid", h.HeaderSize)
	}
	if h.State > StateArchived {
		return h, fmt.Errorf("journal: header: unknown state %d", h.State)
	}
	return h, nil
}

// ObjectHeader starts every object.
type ObjectHeader struct {
	Type  uint8
	Flags uint8
	Size  uint64
}

// ParseObjectHeader parses an object header; a zero one (space allocated
// but not written yet) is ErrIncomplete.
func ParseObjectHeader(b []byte) (ObjectHeader, error) {
	if len(b) < objectHeaderSize {
		return ObjectHeader{}, ErrIncomplete
	}
	o := ObjectHeader{Type: b[0], Flags: b[1], Size: binary.LittleEndian.Uint64(b[8:])}
	if o.Type == 0 && o.Size == 0 {
		return o, ErrIncomplete
	}
	if o.Size < objectHeaderSize {
		return o, fmt.Errorf("journal: object of type %d: size %d is too small", o.Type, o.Size)
	}
	return o, nil
}

// Entry is an entry object: one log record, its data objects by offset.
type Entry struct {
	Seqnum uint64
	// Realtime and Monotonic are in microseconds, since the epoch and since
	// boot.
	Realtime  uint64
	Monotonic uint64
	BootID    [16]byte
	// Items are the offsets of the entry's data objects.
	Items []uint64
}

// ParseEntry parses a whole entry object; items is reused when it has room.
func ParseEntry(b []byte, compact bool, items []uint64) (Entry, error) {
	o, err := ParseObjectHeader(b)
	if err != nil {
		return Entry{}, err
	}
	if o.Type != ObjectEntry {
		return Entry{}, fmt.Errorf("journal: entry: object type %d, want %d", o.Type, ObjectEntry)
	}
	if o.Size < entryHeaderSize || o.Size > uint64(len(b)) {
		return Entry{}, fmt.Errorf("journal: entry: size %d does not fit %d bytes", o.Size, len(b))
	}
	le := binary.LittleEndian
	e := Entry{Seqnum: le.Uint64(b[16:]), Realtime: le.Uint64(b[24:]), Monotonic: le.Uint64(b[32:])}
	copy(e.BootID[:], b[40:56])
	rest := b[entryHeaderSize:o.Size]
	step := 16 // object offset and hash
	if compact {
		step = 4
	}
	if len(rest)%step != 0 {
		return Entry{}, fmt.Errorf("journal: entry: %d bytes of items is not a whole number", len(rest))
	}
	e.Items = items[:0]
	for ; len(rest) >= step; rest = rest[step:] {
		var off uint64
		if compact {
			off = uint64(le.Uint32(rest))
		} else {
			off = le.Uint64(rest)
		}
		if off == 0 {
			return Entry{}, fmt.Errorf("journal: entry %d: item with offset 0", e.Seqnum)
		}
		e.Items = append(e.Items, off)
	}
	if e.Seqnum == 0 {
		return Entry{}, errors.New("journal: entry: seqnum 0")
	}
	return e, nil
}

// EntryArray is an entry array object: offsets of entries, in order, and
// the next array of the chain. Unused slots at the end are zero.
type EntryArray struct {
	Next  uint64
	Items []uint64
}

// ParseEntryArray parses a whole entry array object; items is reused when
// it has room.
func ParseEntryArray(b []byte, compact bool, items []uint64) (EntryArray, error) {
	o, err := ParseObjectHeader(b)
	if err != nil {
		return EntryArray{}, err
	}
	if o.Type != ObjectEntryArray {
		return EntryArray{}, fmt.Errorf("journal: entry array: object type %d, want %d", o.Type, ObjectEntryArray)
	}
	if o.Size < arrayHeaderSize || o.Size > uint64(len(b)) {
		return EntryArray{}, fmt.Errorf("journal: entry array: size %d does not fit %d bytes", o.Size, len(b))
	}
	le := binary.LittleEndian
	a := EntryArray{Next: le.Uint64(b[16:]), Items: items[:0]}
	rest := b[arrayHeaderSize:o.Size]
	step := 8
	if compact {
		step = 4
	}
	for ; len(rest) >= step; rest = rest[step:] {
		if compact {
			a.Items = append(a.Items, uint64(le.Uint32(rest)))
		} else {
			a.Items = append(a.Items, le.Uint64(rest))
		}
	}
	return a, nil
}

// Data is a data object's payload, "FIELD=value", as stored.
type Data struct {
	Flags   uint8 // compression
	Payload []byte
}

// ParseData parses a whole data object. The payload aliases b and may be
// compressed; see Decompress.
func ParseData(b []byte, compact bool) (Data, error) {
	o, err := ParseObjectHeader(b)
	if err != nil {
		return Data{}, err
	}
	if o.Type != ObjectData {
		return Data{}, fmt.Errorf("journal: data: object type %d, want %d", o.Type, ObjectData)
	}
	start := uint64(dataPayloadOffset)
	if compact {
		start = compactDataPayloadOffset
	}
	if o.Size < start || o.Size > uint64(len(b)) {
		return Data{}, fmt.Errorf("journal: data: size %d does not fit %d bytes", o.Size, len(b))
	}
	flags := o.Flags & (objectCompressedXZ | objectCompressedLZ4 | objectCompressedZSTD)
	if flags&(flags-1) != 0 || o.Flags != flags {
		return Data{}, fmt.Errorf("journal: data: bad flags %#x", o.Flags)
	}
	return Data{Flags: flags, Payload: b[start:o.Size]}, nil
}
