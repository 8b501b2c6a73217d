package kernel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	"k8s.io/utils/clock"

	"github.com/node-doctor/node-doctor/pkg/kernel/journal"
)

// DefaultJournalDirs are where journald keeps its files, relative to the
// host root: persistent storage, then volatile storage.
var DefaultJournalDirs = []string{"var/log/journal", "run/log/journal"}

const (
	// maxJournalReadBack bounds the read back when neither since nor the
	// boot time is known.
	maxJournalReadBack = 24 * time.Hour
	// journalRetries is how many polls an entry that is not complete yet
	// is waited for before it is counted as a parse error and skipped.
	journalRetries = 3
)

// JournalSource reads systemd-journald's files directly, without
// libsystemd or journalctl: <dir>/<machine-id>/*.journal for each of Dirs
// (system and user files), entries merged in time order. It follows
// appends, rotation (the file renamed to system@....journal and a new one
// opened) and deletion (vacuum).
type JournalSource struct {
	FS fs.FS // the host root
	// Dirs default to DefaultJournalDirs.
	Dirs []string
	// Namespace reads a journal namespace's files (<machine-id>.<namespace>).
	Namespace string
	// Identifiers and Units select entries by SYSLOG_IDENTIFIER and by
	// systemd unit (_SYSTEMD_UNIT, or UNIT for systemd's messages about the
	// unit); an entry matching either is read. Both empty reads all.
	Identifiers []string
	Units       []string
	Clock       clock.Clock
	// PollInterval defaults to one second.
	PollInterval time.Duration
}

func (s *JournalSource) String() string {
	var what []string
	for _, id := range s.Identifiers {
		what = append(what, "identifier="+id)
	}
	for _, u := range s.Units {
		what = append(what, "unit="+u)
	}
	if s.Namespace != "" {
		what = append(what, "namespace="+s.Namespace)
	}
	if len(what) == 0 {
		return "journal"
	}
	return "journal " + strings.Join(what, ",")
}

// Read implements Source. With a zero since it reads back to the boot, as
// /dev/kmsg holds the kernel's lines since boot.
func (s *JournalSource) Read(ctx context.Context, since time.Time, follow bool, sink Sink) error {
	if since.IsZero() {
		if boot, err := BootTime(s.FS, s.Clock); err == nil {
			since = boot
		} else {
			since = s.Clock.Now().Add(-maxJournalReadBack)
		}
	}
	r := newJournalReader(s, since)
	defer r.close()
	poll := s.PollInterval
	if poll <= 0 {
		poll = pollInterval
	}
	for {
		err := r.poll(ctx, sink)
		if err != nil && (!follow || !errors.Is(err, fs.ErrNotExist)) {
			return err
		}
		reportAbsent(sink, err)
		sink.HandleCaughtUp()
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.Clock.After(poll):
		}
	}
}

// journalReader is the state of one Read.
type journalReader struct {
	src     *JournalSource
	sinceUs uint64
	idents  [][]byte
	units   [][]byte
	files   map[fileKey]*journalFile
	dirs    map[string]time.Time // listed directory -> its mtime then
	// warned keeps a broken file from being logged on every poll.
	warned    map[string]bool
	msg       []byte
	machineID string
}

type fileKey struct{ dev, ino uint64 }

type journalFile struct {
	path string
	fh   fs.File
	f    *journal.File
	cur  journal.Cursor
	seen bool // listed by the last scan

	// head is the next entry in time order, not handed over yet.
	head   uint64
	headRt uint64
	headSn uint64
	// retry is an entry that was not complete yet, and how often it was.
	retry   uint64
	retries int
	// pending says the file may hold entries not read yet; a poll that
	// finds the header as it was does not walk the entry arrays.
	pending  bool
	nEntries uint64
	tailSeq  uint64
	// done files are closed: archived and read, or deleted.
	done bool
}

func newJournalReader(s *JournalSource, since time.Time) *journalReader {
	r := &journalReader{src: s, files: map[fileKey]*journalFile{}, dirs: map[string]time.Time{}, warned: map[string]bool{}}
	if us := since.UnixMicro(); us > 0 {
		r.sinceUs = uint64(us)
	}
	for _, id := range s.Identifiers {
		r.idents = append(r.idents, []byte(id))
	}
	for _, u := range s.Units {
		r.units = append(r.units, []byte(unitName(u)))
	}
	return r
}

// unitName completes a unit name as journalctl -u does: kubelet means
// kubelet.service.
func unitName(u string) string {
	if path.Ext(u) == "" {
		return u + ".service"
	}
	return u
}

func (r *journalReader) close() {
	for k, jf := range r.files {
		jf.close()
		delete(r.files, k)
	}
}

func (jf *journalFile) close() {
	if jf.done {
		return
	}
	jf.f.Close()
	jf.fh.Close()
	jf.done = true
}

// finished says the file is archived (journald will not write it again)
// and read to its end, so it can be closed; it stays known by its inode so
// that it is not read again.
func (jf *journalFile) finished() bool {
	return !jf.done && jf.f.Header().State == journal.StateArchived && !jf.pending && jf.head == 0 && jf.retry == 0
}

// poll notices new, rotated and deleted files, then hands over every entry
// added since the last poll, in time order.
func (r *journalReader) poll(ctx context.Context, sink Sink) error {
	scanErr := r.scan()
	for k, jf := range r.files {
		if jf.done {
			continue
		}
		if err := r.refresh(jf); err != nil {
			// E.g. replaced under the same inode: open it again.
			r.warn(jf.path, err)
			jf.close()
			delete(r.files, k)
			clear(r.dirs)
		}
	}
	for n := 0; ; n++ {
		if n%1024 == 1023 && ctx.Err() != nil {
			return ctx.Err()
		}
		var next *journalFile
		for _, jf := range r.files {
			if jf.done {
				continue
			}
			r.fill(jf, sink)
			if jf.head == 0 {
				continue
			}
			if next == nil || jf.headRt < next.headRt || (jf.headRt == next.headRt && jf.headSn < next.headSn) {
				next = jf
			}
		}
		if next == nil {
			break
		}
		r.emit(next, sink)
		next.head = 0
	}
	for _, jf := range r.files {
		if jf.finished() {
			jf.close()
		}
		if !jf.done {
			jf.f.Release()
		}
	}
	if len(r.files) == 0 && scanErr == nil {
		// Known files, even closed ones, mean there is a journal.
		scanErr = fmt.Errorf("journal: no journal files in %s: %w", strings.Join(r.dirList(), ", "), fs.ErrNotExist)
	}
	return scanErr
}

func (r *journalReader) warn(file string, err error) {
	if !r.warned[file] {
		r.warned[file] = true
		slog.Warn("journal file skipped", "file", file, "err", err)
	}
}

// dirList names the directories holding journal files under each root.
func (r *journalReader) dirList() []string {
	dirs := r.src.Dirs
	if len(dirs) == 0 {
		dirs = DefaultJournalDirs
	}
	suffix := ""
	if r.src.Namespace != "" {
		suffix = "." + r.src.Namespace
	}
	if r.machineID == "" {
		mid, _ := fs.ReadFile(r.src.FS, "etc/machine-id")
		r.machineID = string(bytes.TrimSpace(mid))
	}
	id := r.machineID
	var out []string
	for _, d := range dirs {
		// Files right in the directory too, as libsystemd reads them: a
		// logPath may name a machine's directory itself.
		out = append(out, d)
		if isMachineID(id) {
			out = append(out, path.Join(d, id+suffix))
			continue
		}
		// Without a machine ID, every machine's directory.
		ents, err := fs.ReadDir(r.src.FS, d)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if name, ok := strings.CutSuffix(e.Name(), suffix); ok && e.IsDir() && isMachineID(name) {
				out = append(out, path.Join(d, e.Name()))
			}
		}
	}
	return out
}

func isMachineID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// scan lists the journal directories that changed since the last scan,
// opens new files and drops deleted ones.
func (r *journalReader) scan() error {
	dirs := r.dirList()
	changed := false
	present := map[string]bool{}
	for _, d := range dirs {
		st, err := fs.Stat(r.src.FS, d)
		if err != nil {
			continue
		}
		present[d] = true
		if t, ok := r.dirs[d]; !ok || !t.Equal(st.ModTime()) {
			changed = true
		}
	}
	for d := range r.dirs {
		if !present[d] {
			changed = true
		}
	}
	if !changed {
		return nil
	}
	clear(r.dirs)
	for _, jf := range r.files {
		jf.seen = false
	}
	var errs []error
	retry := false
	for _, d := range dirs {
		st, err := fs.Stat(r.src.FS, d)
		if err != nil {
			continue
		}
		ents, err := fs.ReadDir(r.src.FS, d)
		if err != nil {
			errs = append(errs, fmt.Errorf("journal: list %s: %w", d, err))
			continue
		}
		r.dirs[d] = st.ModTime()
		for _, e := range ents {
			// Files journald found corrupt are renamed to *.journal~.
			if !strings.HasSuffix(e.Name(), ".journal") || !e.Type().IsRegular() {
				continue
			}
			p := path.Join(d, e.Name())
			info, err := e.Info()
			if err != nil {
				continue // deleted meanwhile
			}
			key, ok := keyOf(info)
			if !ok {
				key = fileKey{ino: uint64(len(r.files)) + 1<<62} // no inode: never matches a rename
			}
			if jf, ok := r.files[key]; ok {
				jf.seen, jf.path = true, p
				continue
			}
			jf, err := r.open(p)
			if err != nil {
				// E.g. created but no header yet: list again next poll.
				r.warn(p, err)
				retry = true
				continue
			}
			jf.seen = true
			r.files[key] = jf
		}
	}
	if retry {
		clear(r.dirs)
	}
	for k, jf := range r.files {
		if !jf.seen {
			// Deleted (vacuumed); what it held was read.
			jf.close()
			delete(r.files, k)
		}
	}
	return errors.Join(errs...)
}

func keyOf(info fs.FileInfo) (fileKey, bool) {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return fileKey{}, false
	}
	return fileKey{dev: uint64(st.Dev), ino: st.Ino}, true
}

func (r *journalReader) open(p string) (*journalFile, error) {
	fh, err := r.src.FS.Open(p)
	if err != nil {
		return nil, fmt.Errorf("journal: open %s: %w", p, err)
	}
	ra, ok := fh.(io.ReaderAt)
	if !ok {
		fh.Close()
		return nil, fmt.Errorf("journal: %s: cannot read at offsets", p)
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("journal: stat %s: %w", p, err)
	}
	f, err := journal.Open(ra, st.Size())
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("journal: %s: %w", p, err)
	}
	jf := &journalFile{path: p, fh: fh, f: f, pending: true}
	h := f.Header()
	if h.State != journal.StateOnline && h.TailEntryRealtime < r.sinceUs {
		// Closed before the window: nothing to read, so skip to its end
		// (an archived one is closed after this poll).
		jf.pending = false
		for {
			off, err := f.Next(&jf.cur)
			if err != nil || off == 0 {
				break
			}
		}
	}
	return jf, nil
}

// refresh reads the header again, which is all a poll costs when nothing
// was written.
func (r *journalReader) refresh(jf *journalFile) error {
	// The size must be taken after the header is read, or the header may
	// name objects past it: journald grows a file before writing there.
	size := jf.f.Size()
	for range 3 {
		if err := jf.f.Refresh(size); err != nil {
			return err
		}
		st, err := jf.fh.Stat()
		if err != nil {
			return fmt.Errorf("journal: stat %s: %w", jf.path, err)
		}
		if st.Size() == size {
			break
		}
		size = st.Size()
	}
	h := jf.f.Header()
	if h.NEntries != jf.nEntries || h.TailEntrySeqnum != jf.tailSeq {
		jf.pending, jf.nEntries, jf.tailSeq = true, h.NEntries, h.TailEntrySeqnum
	}
	return nil
}

// fill finds the file's next entry in the window, unless it has one.
func (r *journalReader) fill(jf *journalFile, sink Sink) {
	for jf.head == 0 && (jf.pending || jf.retry != 0) {
		off := jf.retry
		if off == 0 {
			var err error
			off, err = jf.f.Next(&jf.cur)
			if err != nil {
				// A broken chain: nothing more can be found in this file.
				r.warn(jf.path, err)
				sink.HandleParseError()
				jf.cur = journal.Cursor{}
				r.skipAll(jf)
				return
			}
			if off == 0 {
				jf.pending = false
				return
			}
		}
		e, err := jf.f.Entry(off)
		if err != nil {
			// The cache may hold a page from before the entry was written.
			jf.f.Release()
			e, err = jf.f.Entry(off)
		}
		switch {
		case errors.Is(err, journal.ErrIncomplete) && jf.retries < journalRetries:
			// Still being written: look again on the next poll.
			jf.retry = off
			jf.retries++
			return
		case err != nil:
			sink.HandleParseError()
			jf.retry, jf.retries = 0, 0
			continue
		}
		jf.retry, jf.retries = 0, 0
		if e.Realtime < r.sinceUs {
			continue
		}
		jf.head, jf.headRt, jf.headSn = off, e.Realtime, e.Seqnum
	}
}

// skipAll moves the cursor past every entry there is now.
func (r *journalReader) skipAll(jf *journalFile) {
	for {
		off, err := jf.f.Next(&jf.cur)
		if err != nil || off == 0 {
			return
		}
	}
}

var (
	fieldMessage    = []byte("MESSAGE")
	fieldIdentifier = []byte("SYSLOG_IDENTIFIER")
	fieldUnit       = []byte("_SYSTEMD_UNIT")
	fieldUnitBySD   = []byte("UNIT")
)

// emit hands over the file's head entry if it passes the filters.
func (r *journalReader) emit(jf *journalFile, sink Sink) {
	e, err := jf.f.Entry(jf.head)
	if err != nil {
		sink.HandleParseError()
		return
	}
	want := len(r.idents) == 0 && len(r.units) == 0
	msg := r.msg[:0]
	err = jf.f.EntryFields(e, func(name, value []byte) error {
		switch {
		case bytes.Equal(name, fieldMessage):
			msg = append(msg[:0], value...)
		case bytes.Equal(name, fieldIdentifier):
			want = want || slices.ContainsFunc(r.idents, func(id []byte) bool { return bytes.Equal(id, value) })
		case bytes.Equal(name, fieldUnit), bytes.Equal(name, fieldUnitBySD):
			want = want || slices.ContainsFunc(r.units, func(u []byte) bool { return bytes.Equal(u, value) })
		}
		return nil
	})
	if err != nil {
		sink.HandleParseError()
		return
	}
	r.msg = msg
	msg = bytes.TrimSpace(msg)
	if !want || len(msg) == 0 {
		return
	}
	sink.HandleLine(Line{Time: time.UnixMicro(int64(jf.headRt)), Text: msg})
}
