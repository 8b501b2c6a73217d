package cri

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// Area groups the runtime checks in reports.
const Area = "runtime"

// Scheduling of every runtime check. The timeout covers a snapshot whose
// calls each have DefaultCallTimeout.
const (
	checkInterval = 30 * time.Second
	checkTimeout  = 25 * time.Second
)

// Snapshotter gives checks the snapshot of the current round.
type Snapshotter interface {
	Snapshot(ctx context.Context) (*Snapshot, error)
}

// snapshot gets the round's snapshot for a check that needs a reachable
// runtime; a node without a runtime makes the check not applicable.
// fromSnapshot makes a check that judges the shared snapshot with f.
func fromSnapshot(src Snapshotter, f func(*Snapshot) []check.Finding) check.Check {
	return check.Func(func(ctx context.Context) ([]check.Finding, error) {
		s, err := snapshot(ctx, src)
		if err != nil {
			return nil, err
		}
		return f(s), nil
	})
}

func snapshot(ctx context.Context, src Snapshotter) (*Snapshot, error) {
	s, err := src.Snapshot(ctx)
	if err != nil {
		var nr *NoRuntimeError
		if errors.As(err, &nr) {
			return nil, check.NotApplicable("no container runtime on this machine (no socket at %s)", check.Abbreviate(nr.Tried, 3))
		}
		return nil, fmt.Errorf("no snapshot of the container runtime (see check cri-runtime): %w", err)
	}
	return s, nil
}

// instances is one container (one sandbox, one name) across its restarts.
type instances struct {
	sandbox *runtimeapi.PodSandbox // nil when the sandbox is not listed
	// byAttempt holds the instances, latest (highest attempt) first.
	byAttempt []*Container
}

func (g *instances) latest() *Container { return g.byAttempt[0] }

// lastExited is the most recent instance that has exited, or nil.
func (g *instances) lastExited() *Container {
	for _, c := range g.byAttempt {
		if c.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED && c.Status != nil {
			return c
		}
	}
	return nil
}

// groupInstances groups containers by sandbox and name, in a stable order.
// The grouping is computed once per snapshot and shared by the checks.
func groupInstances(s *Snapshot) []*instances {
	s.groupsOnce.Do(func() { s.groups = buildGroups(s) })
	return s.groups
}

func buildGroups(s *Snapshot) []*instances {
	type key struct{ sandbox, name string }
	m := make(map[key]*instances, len(s.Containers))
	out := make([]*instances, 0, len(s.Containers))
	for i := range s.Containers {
		c := &s.Containers[i]
		k := key{c.GetPodSandboxId(), c.GetMetadata().GetName()}
		g, ok := m[k]
		if !ok {
			g = &instances{sandbox: s.Sandbox(c.GetPodSandboxId())}
			m[k] = g
			out = append(out, g)
		}
		g.byAttempt = append(g.byAttempt, c)
	}
	keys := make(map[*instances]string, len(out))
	for _, g := range out {
		sort.Slice(g.byAttempt, func(i, j int) bool {
			a, b := g.byAttempt[i], g.byAttempt[j]
			if a.GetMetadata().GetAttempt() != b.GetMetadata().GetAttempt() {
				return a.GetMetadata().GetAttempt() > b.GetMetadata().GetAttempt()
			}
			return a.GetCreatedAt() > b.GetCreatedAt()
		})
		keys[g] = ContainerObject(g.sandbox, g.latest()).String()
	}
	sort.SliceStable(out, func(i, j int) bool { return keys[out[i]] < keys[out[j]] })
	return out
}

func sandboxReady(sb *runtimeapi.PodSandbox) bool {
	return sb != nil && sb.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY
}

func readySandboxes(s *Snapshot) int {
	n := 0
	for _, sb := range s.Sandboxes {
		if sandboxReady(sb) {
			n++
		}
	}
	return n
}

// unixNano converts a CRI timestamp; zero stays the zero time.
func unixNano(ns int64) time.Time {
	if ns <= 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

func ok(cond, reason, msg string) check.Finding {
	return check.Finding{Severity: check.SeverityOK, Condition: cond, Reason: reason, Message: msg}
}

// age formats a duration for messages, rounded to something readable.
func age(d time.Duration) string {
	switch {
	case d >= time.Hour:
		return d.Round(time.Minute).String()
	case d >= time.Minute:
		return d.Round(time.Second).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

// positive validates a setting.
func positive(name string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%s: must be positive, not %s", name, d)
	}
	return nil
}

// LoopSettings tune the crash-loop and restart-loop checks.
type LoopSettings struct {
	// MinRestarts is how many restarts (CRI attempt count) make a loop.
	MinRestarts uint32 `yaml:"minRestarts"`
	// Window is how recently the latest instance must have exited: kubelet's
	// back-off tops out at 5m, so a loop that is still going exited within it.
	Window time.Duration `yaml:"window"`
}

// Validate checks the ranges.
func (s *LoopSettings) Validate() error {
	if s.MinRestarts < 1 {
		return errors.New("minRestarts: must be at least 1")
	}
	return positive("window", s.Window)
}

func defaultLoopSettings() *LoopSettings {
	return &LoopSettings{MinRestarts: 2, Window: 10 * time.Minute}
}

// looping returns the container groups of ready pods whose latest instance
// exited recently after at least MinRestarts restarts, and whose exit code
// satisfies want. Pods the API says are being deleted, gone or finished are
// left out: their containers exit because kubelet stops them, and the
// sandbox stays ready for the moment between. want gets the pod from the
// API, nil without one.
func looping(s *Snapshot, set *LoopSettings, pods Pods, want func(c *Container, p *corev1.Pod) bool) []*instances {
	var out []*instances
	for _, g := range groupInstances(s) {
		c := g.latest()
		if !sandboxReady(g.sandbox) || c.GetState() != runtimeapi.ContainerState_CONTAINER_EXITED || c.Status == nil {
			continue
		}
		if c.GetMetadata().GetAttempt() < set.MinRestarts {
			continue
		}
		if fin := unixNano(c.Status.GetFinishedAt()); !fin.IsZero() && s.Time.Sub(fin) > set.Window {
			continue
		}
		life, p := lookupPod(pods, PodObject(g.sandbox))
		if life == podGone || life == podTerminating || life == podFinished {
			continue
		}
		if want(c, p) {
			out = append(out, g)
		}
	}
	return out
}

// containerDetails are the crictl inspect fields worth keeping in a finding.
func containerDetails(c *Container) map[string]string {
	st := c.Status
	d := map[string]string{
		"container_id": c.GetId(),
		"attempt":      fmt.Sprint(c.GetMetadata().GetAttempt()),
		"state":        containerState(c.GetState()),
		"image":        c.GetImage().GetImage(),
	}
	if st != nil {
		d["exit_code"] = fmt.Sprint(st.GetExitCode())
		d["reason"] = st.GetReason()
		if st.GetMessage() != "" {
			d["message"] = st.GetMessage()
		}
		if t := unixNano(st.GetStartedAt()); !t.IsZero() {
			d["started_at"] = t.UTC().Format(time.RFC3339)
		}
		if t := unixNano(st.GetFinishedAt()); !t.IsZero() {
			d["finished_at"] = t.UTC().Format(time.RFC3339)
		}
		if st.GetLogPath() != "" {
			d["log_path"] = st.GetLogPath()
		}
		if img := st.GetImage().GetImage(); img != "" {
			d["image"] = img
		}
	}
	return d
}

// kubectlRef is how a person looks at the pod.
func kubectlRef(o check.Object) string {
	return fmt.Sprintf("-n %s %s -c %s", orValue(o.Namespace, "default"), o.Name, o.Container)
}
