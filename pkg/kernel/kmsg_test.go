package kernel

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// readRecords splits a fixture of kmsg records separated by blank lines.
func readRecords(t testing.TB, name string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, r := range bytes.Split(b, []byte("\n\n")) {
		if len(bytes.TrimSpace(r)) == 0 {
			continue
		}
		if r[len(r)-1] != '\n' {
			r = append(r, '\n')
		}
		out = append(out, r)
	}
	return out
}

func TestParseRecordFixtures(t *testing.T) {
	type parsed struct {
		Level, Facility int
		Seq             uint64
		MonotonicUsec   int64
		Flag            string
		Message         string
		Unescaped       string `json:",omitempty"`
		Subsystem       string `json:",omitempty"`
	}
	var got []parsed
	for _, raw := range readRecords(t, "kmsg-records.txt") {
		r, err := ParseRecord(raw)
		if err != nil {
			t.Fatalf("ParseRecord(%q): %v", raw, err)
		}
		p := parsed{Level: r.Level, Facility: r.Facility, Seq: r.Seq, MonotonicUsec: r.Monotonic.Microseconds(),
			Flag: string(r.Flag), Message: string(r.Message)}
		if u := Unescape(r.Message); u != p.Message {
			p.Unescaped = u
		}
		p.Subsystem, _ = r.DictValue("SUBSYSTEM")
		got = append(got, p)
	}
	b, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "kmsg-records.golden.json")
	if *update {
		if err := os.WriteFile(golden, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.TrimSpace(want), bytes.TrimSpace(b)) {
		t.Errorf("parsed records differ from %s (run with -update to accept):\n%s", golden, b)
	}
}

func TestParseRecordErrors(t *testing.T) {
	for _, in := range []string{
		"", "no header at all\n", "x,1,2,-;msg\n", "6,x,2,-;msg\n", "6,1,-5,-;msg\n",
		"6,1,99999999999999999999,-;msg\n", "6;msg\n", ",,,;msg\n",
	} {
		if r, err := ParseRecord([]byte(in)); err == nil {
			t.Errorf("ParseRecord(%q) = %+v, want an error", in, r)
		}
	}
}

func TestParseRecordDoesNotAllocate(t *testing.T) {
	raw := []byte("6,1501,5214763101,-,caller=T41234;oom-kill:constraint=CONSTRAINT_MEMCG,task=stress,pid=41234,uid=0\n SUBSYSTEM=x\n")
	n := testing.AllocsPerRun(100, func() {
		if _, err := ParseRecord(raw); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Errorf("ParseRecord allocates %.0f times per record, want 0", n)
	}
}

func FuzzParseRecord(f *testing.F) {
	for _, r := range readRecords(f, "kmsg-records.txt") {
		f.Add(r)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRecord(b)
		if err != nil {
			return
		}
		if r.Level < 0 || r.Level > 7 || r.Facility < 0 || r.Monotonic < 0 {
			t.Fatalf("out of range: %+v", r)
		}
		// Re-encoding the header and message must give the same record.
		again := fmt.Appendf(nil, "%d,%d,%d,%c;%s\n%s", r.Facility<<3|r.Level, r.Seq, r.Monotonic.Microseconds(), r.Flag, r.Message, r.Dict)
		r2, err := ParseRecord(again)
		if err != nil {
			t.Fatalf("re-encoded %q does not parse: %v", again, err)
		}
		if r2.Level != r.Level || r2.Facility != r.Facility || r2.Seq != r.Seq || r2.Monotonic != r.Monotonic ||
			!bytes.Equal(r2.Message, r.Message) || !bytes.Equal(r2.Dict, r.Dict) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", r, r2)
		}
		_ = Unescape(r.Message)
		_, _ = r.DictValue("SUBSYSTEM")
	})
}
