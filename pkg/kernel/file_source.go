package kernel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"syscall"
	"time"

	"k8s.io/utils/clock"
)

// Limits of the file source.
const (
	// maxLineBytes bounds a line kept while waiting for its end; a longer
	// one is handed over in pieces.
	maxLineBytes = 64 << 10
	// defaultMaxLookbackBytes bounds how far back from the end of a file the
	// lookback reads, so a huge kern.log does not stall the start.
	defaultMaxLookbackBytes = 16 << 20
	fileReadChunk           = 64 << 10
)

// LineParser splits a log file line into its time and message. ok is false
// for lines the source should skip (e.g. not from the kernel).
type LineParser func(line []byte, now time.Time) (t time.Time, msg []byte, ok bool)

// FileSource follows a text log file such as var/log/kern.log. It survives
// rotation by rename (it finishes the old file, then opens the new one) and
// truncation (it starts again from the top), and buffers a last line until
// its newline arrives.
type FileSource struct {
	FS    fs.FS // the host root
	Path  string
	Clock clock.Clock
	// Parse defaults to ParseSyslogKernelLine.
	Parse LineParser
	// PollInterval defaults to one second.
	PollInterval time.Duration
	// MaxLookbackBytes defaults to 16 MiB.
	MaxLookbackBytes int64
	// SkipList drops lines containing any of these strings unparsed.
	SkipList [][]byte
	// Location is the node's time zone, for timestamps without one;
	// nil: the clock's.
	Location *time.Location
}

func (s *FileSource) String() string { return "file " + s.Path }

// Read implements Source.
func (s *FileSource) Read(ctx context.Context, since time.Time, follow bool, sink Sink) error {
	t := &tailer{src: s, sink: sink, since: since, buf: make([]byte, fileReadChunk)}
	if t.src.Parse == nil {
		t.src.Parse = ParseSyslogKernelLine
	}
	defer t.close()
	if err := t.open(true); err != nil {
		if !follow || !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		reportAbsent(sink, err)
	}
	poll := s.PollInterval
	if poll <= 0 {
		poll = pollInterval
	}
	for {
		if t.f != nil {
			if err := t.drain(); err != nil {
				return err
			}
		}
		sink.HandleCaughtUp()
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.Clock.After(poll):
		}
		if err := t.checkRotation(); err != nil {
			return err
		}
	}
}

type tailer struct {
	src     *FileSource
	sink    Sink
	since   time.Time
	f       fs.File
	info    fs.FileInfo
	offset  int64
	buf     []byte
	pending []byte // an unfinished last line
	// skipFirst drops the first line after starting in the middle.
	skipFirst bool
}

func (t *tailer) close() {
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
}

// open opens the path; first says this is the start, where only the tail
// of a long file is read.
func (t *tailer) open(first bool) error {
	f, err := t.src.FS.Open(t.src.Path)
	if err != nil {
		return fmt.Errorf("log file: %w", err) // names the path
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("log file: stat %s: %w", t.src.Path, err)
	}
	t.f, t.info, t.offset, t.pending, t.skipFirst = f, info, 0, t.pending[:0], false
	limit := t.src.MaxLookbackBytes
	if limit <= 0 {
		limit = defaultMaxLookbackBytes
	}
	if first && info.Size() > limit {
		// Start one byte early so that a line starting right at the limit
		// is kept: only the part before the first newline is dropped.
		if err := t.seek(info.Size() - limit - 1); err != nil {
			return err
		}
		t.skipFirst = true

	}
	return nil
}

func (t *tailer) seek(off int64) error {
	sk, ok := t.f.(io.Seeker)
	if !ok {
		return fmt.Errorf("log file: %s: cannot seek", t.src.Path)
	}
	if _, err := sk.Seek(off, io.SeekStart); err != nil {
		return fmt.Errorf("log file: seek %s: %w", t.src.Path, err)
	}
	t.offset = off
	return nil
}

// drain reads to the end of the file, handing over complete lines.
func (t *tailer) drain() error {
	for {
		n, err := t.f.Read(t.buf)
		t.offset += int64(n)
		t.consume(t.buf[:n])
		if errors.Is(err, io.EOF) || (err == nil && n == 0) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("log file: read %s: %w", t.src.Path, err)
		}
	}
}

func (t *tailer) consume(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if len(t.pending)+len(b) > maxLineBytes {
				k := maxLineBytes - len(t.pending)
				t.pending = append(t.pending, b[:k]...)
				t.flush()
				b = b[k:]
				continue
			}
			t.pending = append(t.pending, b...)
			return
		}
		line := b[:i]
		if len(t.pending) > 0 {
			t.pending = append(t.pending, line...)
			line = t.pending
		}
		t.emit(line)
		t.pending = t.pending[:0]
		b = b[i+1:]
	}
}

// flush hands over an unfinished line, e.g. the last one of a rotated file.
func (t *tailer) flush() {
	if len(t.pending) > 0 {
		t.emit(t.pending)
	}
	t.pending = t.pending[:0]
}

func (t *tailer) emit(line []byte) {
	if t.skipFirst {
		t.skipFirst = false
		return
	}
	if containsAny(line, t.src.SkipList) {
		return
	}
	now := t.src.Clock.Now()
	if t.src.Location != nil {
		now = now.In(t.src.Location)
	}
	ts, msg, ok := t.src.Parse(line, now)
	if !ok {
		return
	}
	if !ts.IsZero() && ts.Before(t.since) {
		return
	}
	t.sink.HandleLine(Line{Time: ts, Text: msg})
}

// checkRotation notices truncation and a new file at the path.
func (t *tailer) checkRotation() error {
	if t.f == nil {
		err := t.open(false)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err == nil {
			reportAbsent(t.sink, nil)
		}
		return err
	}
	cur, err := t.f.Stat()
	if err != nil {
		return fmt.Errorf("log file: stat %s: %w", t.src.Path, err)
	}
	if cur.Size() < t.offset {
		// Truncated in place (copytruncate): start again from the top.
		t.pending = t.pending[:0]
		return t.seek(0)
	}
	now, err := fs.Stat(t.src.FS, t.src.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // renamed away and not yet recreated: keep the old one
	}
	if err != nil {
		return fmt.Errorf("log file: stat %s: %w", t.src.Path, err)
	}
	if sameFile(t.info, now) {
		return nil
	}
	// Rotated: finish the old file, then follow the new one from its start.
	if err := t.drain(); err != nil {
		return err
	}
	t.flush()
	t.close()
	if err := t.open(false); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// sameFile compares device and inode; without them it assumes no rotation.
func sameFile(a, b fs.FileInfo) bool {
	sa, ok1 := a.Sys().(*syscall.Stat_t)
	sb, ok2 := b.Sys().(*syscall.Stat_t)
	if !ok1 || !ok2 {
		return true
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}
