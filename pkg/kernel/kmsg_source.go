package kernel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"syscall"
	"time"

	"k8s.io/utils/clock"
)

// DefaultKmsgPath is /dev/kmsg relative to the host root.
const DefaultKmsgPath = "dev/kmsg"

// kmsgBufSize is larger than any record: the kernel caps one at 8 KiB with
// its dictionary, and a read with a smaller buffer fails with EINVAL.
const kmsgBufSize = 16 << 10

// pollInterval is how often a source without readiness notification looks
// for new data.
const pollInterval = time.Second

// KmsgSource reads the kernel log ring buffer through /dev/kmsg.
type KmsgSource struct {
	FS    fs.FS // the host root
	Path  string
	Clock clock.Clock
}

func (s *KmsgSource) String() string { return "kmsg " + s.Path }

// errCaughtUp says there is nothing more to read right now.
var errCaughtUp = errors.New("caught up")

// Read implements Source. A newly opened /dev/kmsg starts at the oldest
// record still in the ring buffer; records older than since are skipped by
// their timestamp, so a restart replays only the lookback window.
func (s *KmsgSource) Read(ctx context.Context, since time.Time, follow bool, sink Sink) error {
	boot, err := BootTime(s.FS, s.Clock)
	if err != nil {
		return fmt.Errorf("kmsg: %w", err)
	}
	f, err := s.FS.Open(s.Path)
	if err != nil {
		return fmt.Errorf("kmsg: open %s: %w", s.Path, err)
	}
	defer f.Close()
	// Closing the file is what wakes a read blocked waiting for a record.
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()

	rd, err := newRecordReader(f)
	if err != nil {
		return fmt.Errorf("kmsg: %s: %w", s.Path, err)
	}
	buf := make([]byte, kmsgBufSize)
	wait := false
	for {
		n, err := rd.read(buf, wait)
		wait = false
		switch {
		case err == nil:
		case errors.Is(err, syscall.EPIPE):
			// The ring buffer overwrote records we had not read yet; the
			// next read returns the oldest one left.
			sink.HandleOverrun()
			continue
		case errors.Is(err, errCaughtUp):
			sink.HandleCaughtUp()
			if !follow {
				return nil
			}
			if rd.canWait() {
				wait = true
				continue
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-s.Clock.After(pollInterval):
			}
			continue
		default:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("kmsg: read %s: %w", s.Path, err)
		}
		rec, err := ParseRecord(buf[:n])
		if err != nil {
			sink.HandleParseError()
			continue
		}
		t := boot.Add(rec.Monotonic)
		if t.Before(since) {
			continue
		}
		sink.HandleLine(Line{Time: t, Text: rec.Message})
	}
}

// recordReader reads one record per call.
type recordReader interface {
	// read returns errCaughtUp when no record is ready and wait is false.
	read(buf []byte, wait bool) (int, error)
	// canWait says read can wait for the next record.
	canWait() bool
}

func newRecordReader(f fs.File) (recordReader, error) {
	sc, ok := f.(syscall.Conn)
	if !ok {
		return plainReader{f}, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("raw conn: %w", err)
	}
	// Non-blocking, so that a one-shot read stops when it catches up; the Go
	// runtime already does this for files it can poll, as /dev/kmsg is.
	var nbErr error
	if err := rc.Control(func(fd uintptr) { nbErr = syscall.SetNonblock(int(fd), true) }); err != nil {
		return nil, fmt.Errorf("set non-blocking: %w", err)
	}
	if nbErr != nil {
		return nil, fmt.Errorf("set non-blocking: %w", nbErr)
	}
	return rawReader{rc}, nil
}

// rawReader reads the device with read(2): a record per call, EAGAIN when
// caught up, EPIPE after an overrun. os.File.Read would hide neither.
type rawReader struct{ rc syscall.RawConn }

func (rawReader) canWait() bool { return true }

func (r rawReader) read(buf []byte, wait bool) (int, error) {
	var n int
	var rerr error
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = syscall.Read(int(fd), buf)
			if rerr != syscall.EINTR {
				break
			}
		}
		// Returning false parks the goroutine until the fd is readable.
		return !(wait && rerr == syscall.EAGAIN)
	})
	switch {
	case err != nil:
		return 0, err
	case rerr == syscall.EAGAIN:
		return 0, errCaughtUp
	case rerr != nil:
		return 0, rerr
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// plainReader reads any fs.File, one record per Read; tests use it.
type plainReader struct{ f fs.File }

func (plainReader) canWait() bool { return false }

func (r plainReader) read(buf []byte, _ bool) (int, error) {
	n, err := r.f.Read(buf)
	if n > 0 {
		return n, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return 0, errCaughtUp
	}
	return 0, err
}
