package kubelet

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"slices"
	"strconv"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// rescanEvery bounds how long a kubelet that starts beside the ones found
// (a second kubelet) can go unseen.
const rescanEvery = time.Minute

// KubeletFinder is ProcFS that remembers the kubelets it found: while each
// still runs (same pid, same start, not a zombie; its state is re-read) and the last full scan is
// younger than a minute, it reads only their proc/<pid>/stat instead of
// every process's comm. Scanning proc was most of node-doctor's idle CPU on
// a machine of 1,000 processes. Safe for concurrent use; checks share one.
type KubeletFinder struct {
	procs ProcFS
	clk   clock.PassiveClock

	mu      sync.Mutex
	found   []Process
	ticks   []uint64 // start times of found, in ticks, to tell reused pids
	scanned time.Time
}

// NewKubeletFinder finds kubelets in the node's proc (fsys is the host
// root; nil clk: the real clock).
func NewKubeletFinder(fsys fs.FS, clk clock.PassiveClock) *KubeletFinder {
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &KubeletFinder{procs: ProcFS{FS: fsys, Clock: clk}, clk: clk}
}

// Kubelets implements Processes.
func (k *KubeletFinder) Kubelets(ctx context.Context) ([]Process, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.clk.Now()
	if len(k.found) > 0 && now.Sub(k.scanned) < rescanEvery && k.stillRunning() {
		return slices.Clone(k.found), nil
	}
	ps, ticks, err := k.procs.scan(ctx)
	if err != nil {
		return nil, err
	}
	k.found, k.ticks, k.scanned = ps, ticks, now
	return slices.Clone(ps), nil
}

// stillRunning says whether every remembered kubelet is the same live
// process.
func (k *KubeletFinder) stillRunning() bool {
	var buf [512]byte
	for i, p := range k.found {
		stat, ok := readSmall(k.procs.FS, "proc/"+strconv.Itoa(p.PID)+"/stat", buf[:])
		if !ok {
			return false
		}
		state, ticks, err := ParseStat(stat)
		if err != nil || state == 'Z' || state == 'X' || ticks != k.ticks[i] || !bytes.Contains(stat, []byte("(kubelet)")) {
			return false
		}
		k.found[i].State = state
	}
	return true
}

// readSmall reads a proc file that fits in buf with one read, without the
// stat os.ReadFile does first.
func readSmall(fsys fs.FS, name string, buf []byte) ([]byte, bool) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	n, err := io.ReadFull(f, buf)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, false
	}
	return buf[:n], true
}
