package kernel

import (
	"bufio"
	"os"
	"testing"
	"time"
)

func TestParseSyslogKernelLine(t *testing.T) {
	now := time.Date(2026, 11, 23, 14, 30, 0, 0, time.UTC)
	type want struct {
		time time.Time
		msg  string
	}
	wants := []*want{
		{time.Date(2026, 11, 23, 14, 20, 1, 0, time.UTC), "oom-kill:constraint=CONSTRAINT_MEMCG,"},
		{time.Date(2026, 11, 23, 14, 20, 1, 0, time.UTC), "Memory cgroup out of memory: Killed process 41234 (stress)"},
		nil, // systemd, not the kernel
		{time.Date(2026, 11, 3, 9, 5, 7, 0, time.UTC), "EXT4-fs (sda1): Remounting filesystem read-only"},
		{time.Date(2026, 11, 23, 13, 21, 0, 123456000, time.UTC), "nf_conntrack: nf_conntrack: table full, dropping packet"},
		{time.Date(2026, 11, 23, 14, 21, 0, 0, time.UTC), "neighbour: arp_cache: neighbor table overflow!"},
		nil,
		{time.Date(2025, 12, 31, 23, 59, 59, 0, time.UTC), "from last year"},
	}
	f, err := os.Open("testdata/kern.log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for i := 0; sc.Scan(); i++ {
		ts, msg, ok := ParseSyslogKernelLine(sc.Bytes(), now)
		w := wants[i]
		if w == nil {
			if ok {
				t.Errorf("line %d: parsed %q, want it skipped", i+1, msg)
			}
			continue
		}
		if !ok || !ts.Equal(w.time) || len(msg) < len(w.msg) || string(msg[:len(w.msg)]) != w.msg {
			t.Errorf("line %d: got %s %q %v, want %s %q...", i+1, ts, msg, ok, w.time, w.msg)
		}
	}
}

func TestParseSyslogKernelLineDoesNotAllocate(t *testing.T) {
	now := time.Now()
	line := []byte("2026-11-23T14:21:00.123456+01:00 node-1 kernel: [ 1.000] nf_conntrack: table full, dropping packet")
	if n := testing.AllocsPerRun(100, func() { ParseSyslogKernelLine(line, now) }); n != 0 {
		t.Errorf("allocates %.0f times per line, want 0", n)
	}
}
