package kernel

import (
	"bytes"
	"time"
)

// ParseSyslogKernelLine parses a kernel line as rsyslog or syslog-ng writes
// it to kern.log, messages or syslog, in either timestamp format:
//
//	Nov 23 14:23:40 node-1 kernel: [ 1234.567890] message
//	2026-11-23T14:23:40.123456+00:00 node-1 kernel: message
//
// Lines from other programs are skipped. A timestamp without a year is put
// in the year that makes it not in the future. It does not allocate.
func ParseSyslogKernelLine(line []byte, now time.Time) (time.Time, []byte, bool) {
	ts, rest, ok := parseSyslogTime(line, now)
	if !ok {
		return time.Time{}, nil, false
	}
	rest = bytes.TrimLeft(rest, " ")
	sp := bytes.IndexByte(rest, ' ') // after the host name
	if sp < 0 {
		return time.Time{}, nil, false
	}
	msg, ok := bytes.CutPrefix(rest[sp+1:], []byte("kernel:"))
	if !ok {
		return time.Time{}, nil, false
	}
	msg = bytes.TrimLeft(msg, " ")
	return ts, trimPrintkTime(msg), true
}

// trimPrintkTime drops a leading "[ 1234.567890] " that some syslog daemons
// keep from the kernel's own timestamp.
func trimPrintkTime(msg []byte) []byte {
	if len(msg) == 0 || msg[0] != '[' {
		return msg
	}
	end := bytes.IndexByte(msg, ']')
	if end < 2 {
		return msg
	}
	for _, c := range msg[1:end] {
		if c != ' ' && c != '.' && (c < '0' || c > '9') {
			return msg
		}
	}
	return bytes.TrimLeft(msg[end+1:], " ")
}

func parseSyslogTime(b []byte, now time.Time) (time.Time, []byte, bool) {
	if len(b) >= 20 && b[4] == '-' && b[10] == 'T' {
		return parseRFC3339(b)
	}
	return parseBSDTime(b, now)
}

var months = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

// parseBSDTime parses "Jan _2 15:04:05" in now's location.
func parseBSDTime(b []byte, now time.Time) (time.Time, []byte, bool) {
	if len(b) < 16 || b[3] != ' ' || b[6] != ' ' || b[9] != ':' || b[12] != ':' || b[15] != ' ' {
		return time.Time{}, nil, false
	}
	mon := 0
	for i, m := range months {
		if string(b[:3]) == m {
			mon = i + 1
			break
		}
	}
	day, ok1 := num(bytes.TrimLeft(b[4:6], " "))
	h, ok2 := num(b[7:9])
	m, ok3 := num(b[10:12])
	s, ok4 := num(b[13:15])
	if mon == 0 || !ok1 || !ok2 || !ok3 || !ok4 || day < 1 || day > 31 || h > 23 || m > 59 || s > 60 {
		return time.Time{}, nil, false
	}
	t := time.Date(now.Year(), time.Month(mon), day, h, m, s, 0, now.Location())
	if t.After(now.Add(24 * time.Hour)) {
		t = t.AddDate(-1, 0, 0) // December's lines read in January
	}
	return t, b[15:], true
}

// parseRFC3339 parses "2006-01-02T15:04:05[.frac](Z|±hh:mm)".
func parseRFC3339(b []byte) (time.Time, []byte, bool) {
	if b[7] != '-' || b[13] != ':' || b[16] != ':' {
		return time.Time{}, nil, false
	}
	y, ok1 := num(b[0:4])
	mo, ok2 := num(b[5:7])
	d, ok3 := num(b[8:10])
	h, ok4 := num(b[11:13])
	mi, ok5 := num(b[14:16])
	s, ok6 := num(b[17:19])
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60 {
		return time.Time{}, nil, false
	}
	i, ns := 19, 0
	if i < len(b) && b[i] == '.' {
		i++
		digits := 0
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			if digits < 9 {
				ns = ns*10 + int(b[i]-'0')
				digits++
			}
		}
		for ; digits < 9; digits++ {
			ns *= 10
		}
	}
	var off time.Duration
	switch {
	case i < len(b) && b[i] == 'Z':
		i++
	case i+6 <= len(b) && (b[i] == '+' || b[i] == '-') && b[i+3] == ':':
		oh, ok1 := num(b[i+1 : i+3])
		om, ok2 := num(b[i+4 : i+6])
		if !ok1 || !ok2 {
			return time.Time{}, nil, false
		}
		off = time.Duration(oh)*time.Hour + time.Duration(om)*time.Minute
		if b[i] == '-' {
			off = -off
		}
		i += 6
	default:
		return time.Time{}, nil, false
	}
	t := time.Date(y, time.Month(mo), d, h, mi, s, ns, time.UTC).Add(-off)
	return t, b[i:], true
}

func num(b []byte) (int, bool) {
	n, ok := atou(b)
	return int(n), ok && len(b) <= 9
}
