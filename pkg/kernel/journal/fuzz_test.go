package journal

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzFile reads a whole journal file, entries and fields, from any bytes:
// it must end with an error or the entries, never panic or loop.
func FuzzFile(f *testing.F) {
	for _, name := range []string{"compact-zstd.journal", "regular-zstd.journal"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		jf, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		defer jf.Close()
		jf.MaxFieldSize = 1 << 20
		readAll(jf)
	})
}

// FuzzParseObjects parses any bytes as each kind of object.
func FuzzParseObjects(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("testdata", "regular-zstd.journal"))
	if err != nil {
		f.Fatal(err)
	}
	h, err := ParseHeader(b)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b[h.HeaderSize:])
	f.Add(b[h.TailObjectOffset:])
	f.Add(b[h.EntryArrayOffset:])
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseHeader(b)
		for _, compact := range []bool{false, true} {
			ParseEntry(b, compact, nil)
			ParseEntryArray(b, compact, nil)
			if d, err := ParseData(b, compact); err == nil {
				var dec decompressor
				dec.decompress(d, 1<<20, nil)
				dec.close()
			}
		}
	})
}
