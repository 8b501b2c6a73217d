package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Record is one /dev/kmsg record. Message and Dict alias the buffer that was
// parsed; copy them to keep them past the next read.
type Record struct {
	// Level is the syslog severity, 0 (emerg) to 7 (debug).
	Level int
	// Facility is the syslog facility, 0 (kern) for kernel messages and 1
	// (user) for lines written into /dev/kmsg from user space.
	Facility int
	Seq      uint64
	// Monotonic is the time since boot the kernel stamped on the record.
	Monotonic time.Duration
	// Flag is '-' for a whole record, 'c' or '+' for continuation fragments
	// on old kernels.
	Flag byte
	// Message is the text, with non-printable bytes escaped by the kernel as
	// \xNN.
	Message []byte
	// Dict holds the continuation lines (" KEY=value\n" each), unparsed.
	Dict []byte
}

// Errors for records that are not in the /dev/kmsg format.
var errBadRecord = errors.New("malformed kmsg record")

// ParseRecord parses one record as read(2) returns it from /dev/kmsg:
//
//	prio,seq,usec,flag[,more...];message\n[ KEY=value\n...]
//
// It does not allocate; the returned slices alias b.
func ParseRecord(b []byte) (Record, error) {
	var r Record
	semi := bytes.IndexByte(b, ';')
	if semi < 0 {
		return r, fmt.Errorf("%w: no ';' after the header", errBadRecord)
	}
	hdr, rest := b[:semi], b[semi+1:]

	field, hdr := cutComma(hdr)
	prio, ok := atou(field)
	if !ok {
		return r, fmt.Errorf("%w: priority %q is not a number", errBadRecord, field)
	}
	r.Level, r.Facility = int(prio&7), int(prio>>3)
	field, hdr = cutComma(hdr)
	if r.Seq, ok = atou(field); !ok {
		return r, fmt.Errorf("%w: sequence %q is not a number", errBadRecord, field)
	}
	field, hdr = cutComma(hdr)
	usec, ok := atou(field)
	if !ok || usec > uint64(1<<63-1)/uint64(time.Microsecond) {
		return r, fmt.Errorf("%w: timestamp %q is not a number of microseconds", errBadRecord, field)
	}
	r.Monotonic = time.Duration(usec) * time.Microsecond
	// The flag is absent on some very old kernels; later fields (caller=...)
	// are ignored.
	r.Flag = '-'
	if field, _ = cutComma(hdr); len(field) == 1 {
		r.Flag = field[0]
	}

	msg, dict, _ := bytes.Cut(rest, []byte{'\n'})
	r.Message, r.Dict = msg, dict
	return r, nil
}

// DictValue returns the value of key in the record's continuation lines.
func (r Record) DictValue(key string) (string, bool) {
	d := r.Dict
	for len(d) > 0 {
		var line []byte
		line, d, _ = bytes.Cut(d, []byte{'\n'})
		line = bytes.TrimPrefix(line, []byte{' '})
		k, v, ok := bytes.Cut(line, []byte{'='})
		if ok && string(k) == key {
			return string(v), true
		}
	}
	return "", false
}

func cutComma(b []byte) (field, rest []byte) {
	field, rest, _ = bytes.Cut(b, []byte{','})
	return field, rest
}

// atou parses a decimal without allocating (strconv needs a string).
func atou(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// Unescape decodes the kernel's \xNN escapes in a message.
func Unescape(msg []byte) string {
	if bytes.IndexByte(msg, '\\') < 0 {
		return string(msg)
	}
	out := make([]byte, 0, len(msg))
	for i := 0; i < len(msg); i++ {
		if msg[i] == '\\' && i+3 < len(msg) && msg[i+1] == 'x' {
			if v, err := strconv.ParseUint(string(msg[i+2:i+4]), 16, 8); err == nil {
				out = append(out, byte(v))
				i += 3
				continue
			}
		}
		out = append(out, msg[i])
	}
	return string(out)
}
