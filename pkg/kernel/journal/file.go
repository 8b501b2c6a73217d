package journal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

const (
	// maxObjectSize bounds one object read into memory; a larger one is
	// treated as corruption.
	maxObjectSize = 256 << 20
	// headerReadSize covers every header field read.
	headerReadSize = 272
)

// chunkSize and maxChunks bound the cache of file contents (variables for
// tests).
var (
	chunkSize uint64 = 64 << 10
	maxChunks        = 16
)

// File is an open journal file. It is not safe for concurrent use.
type File struct {
	r    io.ReaderAt
	size int64
	hdr  Header
	// MaxFieldSize bounds a field once decompressed; 0 means
	// DefaultMaxFieldSize.
	MaxFieldSize int

	dec    decompressor
	buf    []byte
	out    []byte
	items  []uint64
	chunks map[uint64][]byte
	free   [][]byte
	hbuf   []byte
}

// Open reads the header of the journal file r of size bytes.
func Open(r io.ReaderAt, size int64) (*File, error) {
	f := &File{r: r}
	if err := f.Refresh(size); err != nil {
		return nil, err
	}
	return f, nil
}

// Header returns the header as last read.
func (f *File) Header() Header { return f.hdr }

// Size returns the file size as last given.
func (f *File) Size() int64 { return f.size }

// Refresh reads the header again, after the file grew to size bytes.
func (f *File) Refresh(size int64) error {
	n := min(size, headerReadSize)
	if n < minHeaderSize {
		return fmt.Errorf("journal: file of %d bytes has no header", size)
	}
	if f.hbuf == nil {
		f.hbuf = make([]byte, headerReadSize)
	}
	b := f.hbuf[:n]
	if _, err := f.r.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("journal: read header: %w", err)
	}
	h, err := ParseHeader(b)
	if err != nil {
		return err
	}
	if f.hdr.FileID != ([16]byte{}) && h.FileID != f.hdr.FileID {
		return errors.New("journal: file was replaced (new file ID)")
	}
	f.hdr, f.size = h, size
	f.Release()
	return nil
}

// Close frees the decompressor; the underlying file is the caller's.
func (f *File) Close() { f.dec.close() }

// readObject reads the whole object at off, of type typ.
func (f *File) readObject(off uint64, typ uint8) ([]byte, error) {
	if off%8 != 0 || off < f.hdr.HeaderSize {
		return nil, fmt.Errorf("journal: object offset %d is not valid", off)
	}
	size := uint64(f.size)
	if off >= size || size-off < objectHeaderSize {
		return nil, ErrIncomplete
	}
	if cap(f.buf) < objectHeaderSize {
		f.buf = make([]byte, objectHeaderSize)
	}
	b := f.buf[:objectHeaderSize]
	if err := f.readAt(b, off); err != nil {
		return nil, err
	}
	o, err := ParseObjectHeader(b)
	if err != nil {
		return nil, err
	}
	if o.Type != typ {
		return nil, fmt.Errorf("journal: object at %d has type %d, want %d", off, o.Type, typ)
	}
	if o.Size > maxObjectSize {
		return nil, fmt.Errorf("journal: object at %d: size %d is over the limit", off, o.Size)
	}
	if o.Size > size-off {
		return nil, ErrIncomplete
	}
	if uint64(cap(f.buf)) < o.Size {
		nb := make([]byte, o.Size)
		copy(nb, b)
		f.buf = nb
	}
	b = f.buf[:o.Size]
	if err := f.readAt(b[objectHeaderSize:], off+objectHeaderSize); err != nil {
		return nil, err
	}
	return b, nil
}

// readAt reads through a cache of file chunks: an entry and its new data
// objects are near each other, and a read(2) per object costs more than the
// parsing.
func (f *File) readAt(b []byte, off uint64) error {
	for len(b) > 0 {
		idx := off / chunkSize
		c, err := f.chunk(idx)
		if err != nil {
			return err
		}
		in := off - idx*chunkSize
		if in >= uint64(len(c)) {
			return ErrIncomplete // shorter than its header said: still growing
		}
		n := copy(b, c[in:])
		b, off = b[n:], off+uint64(n)
	}
	return nil
}

func (f *File) chunk(idx uint64) ([]byte, error) {
	if c, ok := f.chunks[idx]; ok {
		return c, nil
	}
	if len(f.chunks) >= maxChunks {
		f.Release()
	}
	var c []byte
	if k := len(f.free); k > 0 {
		c, f.free = f.free[k-1][:chunkSize], f.free[:k-1]
	} else {
		c = make([]byte, chunkSize)
	}
	n, err := f.r.ReadAt(c, int64(idx*chunkSize))
	if n < len(c) && err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("journal: read at %d: %w", idx*chunkSize, err)
	}
	c = c[:n]
	if f.chunks == nil {
		f.chunks = map[uint64][]byte{}
	}
	f.chunks[idx] = c
	return c, nil
}

// Release drops the cached file contents; the next read sees what was
// written since. Refresh does it too.
func (f *File) Release() {
	for k, c := range f.chunks {
		f.free = append(f.free, c)
		delete(f.chunks, k)
	}
}

// Entry reads the entry object at off. Its Items are valid until the next
// call.
func (f *File) Entry(off uint64) (Entry, error) {
	b, err := f.readObject(off, ObjectEntry)
	if err != nil {
		return Entry{}, err
	}
	e, err := ParseEntry(b, f.hdr.Compact(), f.items)
	if err != nil {
		return Entry{}, fmt.Errorf("%w (at %d)", err, off)
	}
	f.items = e.Items
	return e, nil
}

// Field returns the data object at off, decompressed: "NAME=value". It is
// valid until the next call.
func (f *File) Field(off uint64) ([]byte, error) {
	b, err := f.readObject(off, ObjectData)
	if err != nil {
		return nil, err
	}
	d, err := ParseData(b, f.hdr.Compact())
	if err != nil {
		return nil, fmt.Errorf("%w (at %d)", err, off)
	}
	max := f.MaxFieldSize
	if max <= 0 {
		max = DefaultMaxFieldSize
	}
	out, err := f.dec.decompress(d, max, f.out)
	if err != nil {
		return nil, fmt.Errorf("%w (at %d)", err, off)
	}
	if d.Flags != 0 {
		f.out = out
	}
	return out, nil
}

// Cursor is a position in a file's chain of entry arrays. The zero value
// is the start of the file.
type Cursor struct {
	array  uint64 // offset of the current entry array; 0 before the first
	idx    int    // next item of the current array
	items  []uint64
	next   uint64
	loaded bool
	last   uint64 // offset of the entry last returned
}

// Next returns the offset of the next entry, or 0 when there is none yet;
// a later call after the file grew goes on from there.
func (f *File) Next(c *Cursor) (uint64, error) {
	fresh := false
	for {
		if c.array == 0 {
			if f.hdr.EntryArrayOffset == 0 {
				return 0, nil
			}
			c.array, c.idx, c.loaded = f.hdr.EntryArrayOffset, 0, false
		}
		if !c.loaded || (!fresh && (c.idx >= len(c.items) || c.items[c.idx] == 0)) {
			b, err := f.readObject(c.array, ObjectEntryArray)
			if errors.Is(err, ErrIncomplete) {
				return 0, nil
			}
			if err != nil {
				return 0, err
			}
			a, err := ParseEntryArray(b, f.hdr.Compact(), c.items)
			if err != nil {
				return 0, err
			}
			c.items, c.next, c.loaded, fresh = a.Items, a.Next, true, true
		}
		if c.idx < len(c.items) {
			off := c.items[c.idx]
			if off == 0 {
				return 0, nil // unused slots: the end for now
			}
			if off <= c.last {
				return 0, fmt.Errorf("journal: entry array at %d: entry offsets go backwards", c.array)
			}
			c.idx++
			c.last = off
			return off, nil
		}
		if c.next == 0 {
			return 0, nil
		}
		// Arrays are appended, so the chain only goes forward; this also
		// keeps a corrupt file from looping.
		if c.next <= c.array {
			return 0, fmt.Errorf("journal: entry array at %d: next array %d goes backwards", c.array, c.next)
		}
		c.array, c.idx, c.loaded, fresh = c.next, 0, false, false
	}
}

// EntryFields calls fn with each field of e, split into name and value;
// both are valid only during the call. It stops at fn's first error.
func (f *File) EntryFields(e Entry, fn func(name, value []byte) error) error {
	for _, off := range e.Items {
		b, err := f.Field(off)
		if err != nil {
			return err
		}
		name, value, ok := bytes.Cut(b, []byte{'='})
		if !ok {
			return fmt.Errorf("journal: data at %d: no '=' in field", off)
		}
		if err := fn(name, value); err != nil {
			return err
		}
	}
	return nil
}
