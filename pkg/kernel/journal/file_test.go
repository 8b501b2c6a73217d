package journal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/node-doctor/node-doctor/pkg/kernel/journal/journaltest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.journal and *.json from a real journald (root)")

// record is one entry as both this reader and journalctl -o json see it.
type record struct {
	Realtime uint64
	Seqnum   uint64
	Fields   map[string][]string
}

// readFile reads every entry of a journal file with this package.
func readFile(t testing.TB, path string) []record {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(fh, st.Size())
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	recs, err := readAll(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return recs
}

func readAll(f *File) ([]record, error) {
	var out []record
	var c Cursor
	for {
		off, err := f.Next(&c)
		if err != nil {
			return out, err
		}
		if off == 0 {
			return out, nil
		}
		e, err := f.Entry(off)
		if err != nil {
			return out, err
		}
		r := record{Realtime: e.Realtime, Seqnum: e.Seqnum, Fields: map[string][]string{}}
		err = f.EntryFields(e, func(name, value []byte) error {
			r.Fields[string(name)] = append(r.Fields[string(name)], string(value))
			return nil
		})
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
}

// parseJournalctlJSON parses journalctl -o json --all output: one object
// per line; a value is a string, an array of bytes (binary), or an array of
// those (a field repeated).
func parseJournalctlJSON(t testing.TB, b []byte) []record {
	t.Helper()
	var out []record
	for line := range bytes.Lines(b) {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("journalctl json: %v: %s", err, line)
		}
		r := record{Fields: map[string][]string{}}
		for k, raw := range m {
			switch k {
			case "__REALTIME_TIMESTAMP":
				var s string
				json.Unmarshal(raw, &s)
				r.Realtime, _ = strconv.ParseUint(s, 10, 64)
				continue
			case "__CURSOR":
				var s string
				json.Unmarshal(raw, &s)
				for part := range strings.SplitSeq(s, ";") {
					if v, ok := strings.CutPrefix(part, "i="); ok {
						r.Seqnum, _ = strconv.ParseUint(v, 16, 64)
					}
				}
				continue
			}
			if strings.HasPrefix(k, "__") {
				continue // address fields journalctl adds
			}
			r.Fields[k] = jsonValues(t, raw)
		}
		out = append(out, r)
	}
	return out
}

func jsonValues(t testing.TB, raw json.RawMessage) []string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []string{s}
	}
	var bs []byte
	var nums []int
	if json.Unmarshal(raw, &nums) == nil {
		for _, n := range nums {
			bs = append(bs, byte(n))
		}
		return []string{string(bs)}
	}
	var many []json.RawMessage
	if err := json.Unmarshal(raw, &many); err != nil {
		t.Fatalf("journalctl json value %s: %v", raw, err)
	}
	var out []string
	for _, m := range many {
		out = append(out, jsonValues(t, m)...)
	}
	return out
}

func compareRecords(t *testing.T, got, want []record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("read %d entries, journalctl shows %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Realtime != w.Realtime || g.Seqnum != w.Seqnum {
			t.Errorf("entry %d: realtime/seqnum %d/%d, journalctl %d/%d", i, g.Realtime, g.Seqnum, w.Realtime, w.Seqnum)
		}
		if len(g.Fields) != len(w.Fields) {
			t.Errorf("entry %d: %d fields, journalctl %d: %v vs %v", i, len(g.Fields), len(w.Fields), keys(g.Fields), keys(w.Fields))
		}
		for k, wv := range w.Fields {
			gv := g.Fields[k]
			if fmt.Sprint(sorted(gv)) != fmt.Sprint(sorted(wv)) {
				t.Errorf("entry %d field %s: %.80q, journalctl %.80q", i, k, gv, wv)
			}
		}
	}
}

func keys(m map[string][]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return sorted(out)
}

func sorted(s []string) []string {
	s = append([]string(nil), s...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

// The fixtures were written by the real systemd-journald 252 of Debian 12
// (it compresses with ZSTD only; see compress_test.go for LZ4 and XZ)
// (go test -run TestPrivilegedJournaldFiles -update), with journalctl's
// view of them next to each; unused space at the end of a file is cut.
var fixtures = []struct {
	name string
	opts journaltest.Options
	flag uint32
}{
	{"compact-zstd", journaltest.Options{Compact: true}, IncompatibleZSTD | IncompatibleCompact},
	{"regular-zstd", journaltest.Options{Compact: false}, IncompatibleZSTD},
}

func TestFixtures(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			path := filepath.Join("testdata", fx.name+".journal")
			want, err := os.ReadFile(filepath.Join("testdata", fx.name+".json"))
			if err != nil {
				t.Fatal(err)
			}
			got := readFile(t, path)
			compareRecords(t, got, parseJournalctlJSON(t, want))
			b, _ := os.ReadFile(path)
			h, err := ParseHeader(b)
			if err != nil {
				t.Fatal(err)
			}
			if h.Incompatible&^IncompatibleKeyedHash != fx.flag {
				t.Errorf("incompatible flags %#x, want %#x", h.Incompatible, fx.flag)
			}
			if !hasCompressed(t, path) {
				t.Error("no compressed data object in the fixture: the big field was not compressed")
			}
		})
	}
}

// hasCompressed says whether any data object of an entry is compressed.
func hasCompressed(t *testing.T, path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	var c Cursor
	for {
		off, err := f.Next(&c)
		if err != nil || off == 0 {
			return false
		}
		e, err := f.Entry(off)
		if err != nil {
			t.Fatal(err)
		}
		for _, item := range append([]uint64(nil), e.Items...) {
			obj, err := f.readObject(item, ObjectData)
			if err != nil {
				t.Fatal(err)
			}
			if obj[1] != 0 {
				return true
			}
		}
	}
}

// A file cut anywhere, as a reader may see one being written, reads up to
// the last complete entry without error or panic.
func TestTruncatedFixture(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "compact-zstd.journal"))
	if err != nil {
		t.Fatal(err)
	}
	full, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	all, err := readAll(full)
	if err != nil {
		t.Fatal(err)
	}
	for n := minHeaderSize; n < len(b); n += 8 {
		f, err := Open(bytes.NewReader(b[:n]), int64(n))
		if err != nil {
			t.Fatalf("cut at %d: %v", n, err)
		}
		recs, err := readAll(f)
		if err != nil && !errors.Is(err, ErrIncomplete) {
			t.Fatalf("cut at %d: %v", n, err)
		}
		if len(recs) > len(all) {
			t.Fatalf("cut at %d: %d entries, more than the whole file's %d", n, len(recs), len(all))
		}
	}
}

func TestParseHeaderErrors(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "compact-zstd.journal"))
	if err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func([]byte){
		"signature": func(b []byte) { b[0] = 'X' },
		"flags":     func(b []byte) { b[12] |= 0x80 },
		"state":     func(b []byte) { b[16] = 9 },
		"size":      func(b []byte) { b[88] = 3 },
	} {
		c := append([]byte(nil), b[:headerReadSize]...)
		mod(c)
		if _, err := ParseHeader(c); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := ParseHeader(b[:100]); err == nil {
		t.Error("short header: no error")
	}
}

func TestDecodeLZ4(t *testing.T) {
	// "abcabcabcabc" as an LZ4 block: 3 literals, then a match of 9 at
	// distance 3 (token 0x35), then an empty literal run is not needed.
	src := []byte{12, 0, 0, 0, 0, 0, 0, 0, 0x35, 'a', 'b', 'c', 3, 0}
	got, err := decodeLZ4(src, 100, nil)
	if err != nil || string(got) != "abcabcabcabc" {
		t.Fatalf("got %q, %v", got, err)
	}
	for _, bad := range [][]byte{
		src[:5],
		{12, 0, 0, 0, 0, 0, 0, 0, 0x35, 'a', 'b', 'c', 9, 0}, // offset past start
		{200, 0, 0, 0, 0, 0, 0, 0, 0x30, 'a', 'b', 'c'},      // short output
	} {
		if _, err := decodeLZ4(bad, 100, nil); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
	if _, err := decodeLZ4(src, 5, nil); err == nil {
		t.Error("over the limit: no error")
	}
}

// TestPrivilegedJournaldFiles runs the real journald (root), writes
// entries with a unique marker, big fields it compresses, a multi-line and
// a binary field, and reads its files with this package: every entry and
// field must equal what journalctl shows. With -update it rewrites the
// fixtures.
func TestPrivilegedJournaldFiles(t *testing.T) {
	journaltest.Skip(t)
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			j := journaltest.Start(t, fx.opts)
			marker := fmt.Sprintf("nd-journal-test-%d", time.Now().UnixNano())
			big := strings.Repeat("a big field that journald compresses "+marker+" ", 100)
			sends := [][]journaltest.Field{
				{{Name: "MESSAGE", Value: "first " + marker}, {Name: "SYSLOG_IDENTIFIER", Value: "ndtest"}, {Name: "PRIORITY", Value: "4"}},
				{{Name: "MESSAGE", Value: big}, {Name: "SYSLOG_IDENTIFIER", Value: "ndtest"}, {Name: "BIG", Value: big}},
				{{Name: "MESSAGE", Value: "multi\nline " + marker}, {Name: "SYSLOG_IDENTIFIER", Value: "other"}, {Name: "BIN", Value: "a\x00b\n\x01"}},
				{{Name: "MESSAGE", Value: "repeated " + marker}, {Name: "SYSLOG_IDENTIFIER", Value: "ndtest"}, {Name: "TAG", Value: "one"}, {Name: "TAG", Value: "two"}},
			}
			for _, s := range sends {
				if err := j.Send(s...); err != nil {
					t.Fatal(err)
				}
			}
			if err := j.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			// Archiving makes the file offline, as a fixture should be.
			if *update {
				if err := j.Rotate(ctx); err != nil {
					t.Fatal(err)
				}
			}
			files, err := j.Files()
			if err != nil {
				t.Fatal(err)
			}
			var n int
			for _, path := range files {
				want, err := osexec.CommandContext(ctx, journaltest.JournalctlPath, "--file="+path, "-o", "json", "--all", "--no-pager").Output()
				if err != nil {
					t.Fatal(err)
				}
				wantRecs := parseJournalctlJSON(t, want)
				got := readFile(t, path)
				compareRecords(t, got, wantRecs)
				for _, r := range got {
					if strings.Contains(strings.Join(r.Fields["MESSAGE"], ""), marker) {
						n++
					}
				}
				if *update && strings.Contains(filepath.Base(path), "@") && len(got) > 0 {
					writeFixture(t, fx.name, path, want)
				}
			}
			if n != len(sends) {
				t.Fatalf("found %d entries with the marker, sent %d", n, len(sends))
			}
		})
	}
}

// writeFixture copies a journal file into testdata, cut after its last
// object, with journalctl's view of it.
func writeFixture(t *testing.T, name, path string, js []byte) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	o, err := ParseObjectHeader(b[h.TailObjectOffset:])
	if err != nil {
		t.Fatal(err)
	}
	end := (h.TailObjectOffset + o.Size + 7) &^ 7
	if err := os.WriteFile(filepath.Join("testdata", name+".journal"), b[:end], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", name+".json"), js, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Objects bigger than the read buffer, reads across cache chunks and a
// full cache give the same entries (a grown buffer once lost the object's
// header).
func TestReadBufferAndChunkEdges(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "regular-zstd.journal"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := readAll(mustOpen(t, b))
	if err != nil {
		t.Fatal(err)
	}
	f := mustOpen(t, b)
	f.buf = make([]byte, 0, 1) // every object grows it
	got, err := readAll(f)
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("with a small buffer: %v, %d entries, want %d", err, len(got), len(want))
	}
	defer func(size uint64, n int) { chunkSize, maxChunks = size, n }(chunkSize, maxChunks)
	chunkSize, maxChunks = 40, 3 // objects span chunks; the cache fills up
	got, err = readAll(mustOpen(t, b))
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("with small chunks: %v, %d entries, want %d", err, len(got), len(want))
	}
}

func mustOpen(t *testing.T, b []byte) *File {
	t.Helper()
	f, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return f
}
