// Package journaltest runs a real systemd-journald for tests, in a journal
// namespace of its own so that the host's journal (if any) is not touched:
// sockets under /run/systemd/journal.<ns>/, files under
// /run/log/journal/<machine-id>.<ns>/ (volatile storage). A namespaced
// journald does not read /dev/kmsg. It needs root.
package journaltest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Paths of the journald binaries on Debian.
const (
	JournaldPath   = "/lib/systemd/systemd-journald"
	JournalctlPath = "/usr/bin/journalctl"
)

// Options tune the journald started.
type Options struct {
	// Compact false writes regular (non-compact) files.
	Compact bool
	// MaxFileSize bounds each file, so files stay small; empty means 1M.
	MaxFileSize string
	// Persistent stores under /var/log/journal/<machine-id>.<ns>/, where
	// journald also splits users' entries into user-<uid>.journal files;
	// otherwise volatile, under /run/log/journal.
	Persistent bool
}

// Journald is a running namespaced journald.
type Journald struct {
	Namespace string
	MachineID string
	// Dir holds its journal files.
	Dir    string
	Socket string
	cmd    *exec.Cmd
	conf   string
	// madeRunJournal and madeVarJournal say journald created
	// /run/log/journal or /var/log/journal for this test.
	madeRunJournal, madeVarJournal bool
}

const (
	runJournal = "/run/log/journal"
	varJournal = "/var/log/journal"
)

// Skip skips the test unless journald can be run here.
func Skip(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs a namespaced systemd-journald")
	}
	for _, p := range []string{JournaldPath, JournalctlPath, "/etc/machine-id"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("no %s here, so no real journald to test against: %v", p, err)
		}
	}
}

// Start starts a journald in a new namespace; cleanup stops it and removes
// its sockets, files and config, even if the test fails.
func Start(t testing.TB, o Options) *Journald {
	t.Helper()
	Skip(t)
	mid, err := os.ReadFile("/etc/machine-id")
	if err != nil {
		t.Fatal(err)
	}
	var rnd [4]byte
	rand.Read(rnd[:])
	ns := "ndtest" + hex.EncodeToString(rnd[:])
	j := &Journald{
		Namespace: ns,
		MachineID: strings.TrimSpace(string(mid)),
		Socket:    "/run/systemd/journal." + ns + "/socket",
		conf:      "/run/systemd/journald@" + ns + ".conf.d",
	}
	if _, err := os.Stat(runJournal); errors.Is(err, fs.ErrNotExist) {
		j.madeRunJournal = true
	}
	if _, err := os.Stat(varJournal); errors.Is(err, fs.ErrNotExist) {
		j.madeVarJournal = true
	}
	j.Dir = filepath.Join(runJournal, j.MachineID+"."+ns)
	storage := "Storage=volatile\nRuntimeMaxFileSize="
	if o.Persistent {
		j.Dir = filepath.Join(varJournal, j.MachineID+"."+ns)
		storage = "Storage=persistent\nSystemMaxFileSize="
	}
	t.Cleanup(j.stop)
	size := o.MaxFileSize
	if size == "" {
		size = "1M"
	}
	conf := fmt.Sprintf("[Journal]\n%s%s\nRateLimitBurst=0\n"+
		"ForwardToSyslog=no\nForwardToKMsg=no\nForwardToConsole=no\nForwardToWall=no\nAudit=no\n", storage, size)
	// journald reads a namespace's settings from /etc/systemd/journald@<ns>.conf
	// and from drop-ins, which may live under /run.
	if err := os.MkdirAll(j.conf, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(j.conf, "test.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	j.cmd = exec.Command(JournaldPath, ns)
	j.cmd.Env = append(os.Environ(), "SYSTEMD_LOG_TARGET=console", fmt.Sprintf("SYSTEMD_JOURNAL_COMPACT=%t", o.Compact))
	var out bytes.Buffer
	j.cmd.Stdout, j.cmd.Stderr = &out, &out
	if err := j.cmd.Start(); err != nil {
		t.Fatalf("start journald: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err1 := os.Stat(j.Socket)
		_, err2 := os.Stat(filepath.Join(j.Dir, "system.journal"))
		if err1 == nil && err2 == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("journald %s did not come up: %v %v\n%s", ns, err1, err2, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return j
}

func (j *Journald) stop() {
	if j.cmd != nil && j.cmd.Process != nil {
		j.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { j.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			j.cmd.Process.Kill()
			<-done
		}
	}
	os.RemoveAll(j.conf)
	os.RemoveAll("/run/systemd/journal." + j.Namespace)
	os.RemoveAll(j.Dir)
	os.RemoveAll(filepath.Join(varJournal, j.MachineID+"."+j.Namespace))
	os.RemoveAll(filepath.Join(runJournal, j.MachineID+"."+j.Namespace))
	// Only if empty: another test may use them.
	if j.madeRunJournal {
		os.Remove(runJournal)
	}
	if j.madeVarJournal {
		os.Remove(varJournal)
	}
}

// Field is one field of a sent entry.
type Field struct{ Name, Value string }

// Send writes one entry through journald's native protocol.
func (j *Journald) Send(fields ...Field) error {
	var b bytes.Buffer
	for _, f := range fields {
		if strings.ContainsRune(f.Value, '\n') {
			// Binary form: name, newline, 64-bit length, value, newline.
			b.WriteString(f.Name)
			b.WriteByte('\n')
			binary.Write(&b, binary.LittleEndian, uint64(len(f.Value)))
			b.WriteString(f.Value)
			b.WriteByte('\n')
			continue
		}
		fmt.Fprintf(&b, "%s=%s\n", f.Name, f.Value)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: j.Socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("journal socket: %w", err)
	}
	defer c.Close()
	if _, err := c.Write(b.Bytes()); err != nil {
		return fmt.Errorf("journal socket: write: %w", err)
	}
	return nil
}

// Journalctl runs journalctl on this namespace with args.
func (j *Journald) Journalctl(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, JournalctlPath, append([]string{"--namespace=" + j.Namespace, "--no-pager"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("journalctl %v: %w: %s", args, err, stderr.String())
	}
	return out, nil
}

// Sync waits until journald has written everything sent so far.
func (j *Journald) Sync(ctx context.Context) error {
	_, err := j.Journalctl(ctx, "--sync")
	return err
}

// Rotate makes journald archive its files and start new ones.
func (j *Journald) Rotate(ctx context.Context) error {
	_, err := j.Journalctl(ctx, "--rotate")
	return err
}

// Files lists the journal files.
func (j *Journald) Files() ([]string, error) {
	m, err := filepath.Glob(filepath.Join(j.Dir, "*.journal"))
	if err == nil && len(m) == 0 {
		err = errors.New("no journal files in " + j.Dir)
	}
	return m, err
}

// LogAs writes msg with identifier ident through journald's syslog socket
// from a process running as uid (util-linux's setpriv and logger), so that
// journald files it under that user.
func (j *Journald) LogAs(ctx context.Context, uid int, ident, msg string) error {
	id := fmt.Sprint(uid)
	cmd := exec.CommandContext(ctx, "setpriv", "--reuid="+id, "--regid="+id, "--clear-groups",
		"logger", "-u", "/run/systemd/journal."+j.Namespace+"/dev-log", "-t", ident, msg)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("logger as uid %d: %w: %s", uid, err, out)
	}
	return nil
}
