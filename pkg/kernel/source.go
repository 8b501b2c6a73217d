package kernel

import (
	"context"
	"time"
)

// Line is one log line as a source hands it over. Text aliases the source's
// buffer and is valid only during the call.
type Line struct {
	// Time is when the kernel (or syslog) logged the line; zero if unknown.
	Time time.Time
	Text []byte
}

// Sink receives what a source reads. Calls come from one goroutine.
type Sink interface {
	HandleLine(Line)
	// HandleOverrun says lines were lost because the reader fell behind
	// (the kernel ring buffer wrapped past it).
	HandleOverrun()
	// HandleParseError says a record could not be parsed and was skipped.
	HandleParseError()
	// HandleCaughtUp says every line logged so far has been handed over;
	// a following source says so each time it reaches the end.
	HandleCaughtUp()
}

// Source is a kernel or system log.
type Source interface {
	// Read hands the lines logged at or after since to s. Without follow it
	// returns once it has caught up with the log; with follow it keeps
	// reading new lines until ctx is done.
	Read(ctx context.Context, since time.Time, follow bool, s Sink) error
	// String names the source for messages, e.g. "kmsg dev/kmsg".
	String() string
}

// AbsenceSink is a Sink that wants to know whether the log exists: a
// following source waits for a missing log instead of failing, and says so
// each time that changes (err wraps fs.ErrNotExist; nil once it is there).
type AbsenceSink interface {
	HandleAbsent(err error)
}

func reportAbsent(s Sink, err error) {
	if a, ok := s.(AbsenceSink); ok {
		a.HandleAbsent(err)
	}
}
