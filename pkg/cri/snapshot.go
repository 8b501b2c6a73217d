package cri

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/clock"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// CRI labels kubelet puts on sandboxes and containers.
const (
	LabelPodNamespace  = "io.kubernetes.pod.namespace"
	LabelPodName       = "io.kubernetes.pod.name"
	LabelPodUID        = "io.kubernetes.pod.uid"
	LabelContainerName = "io.kubernetes.container.name"
)

// Snapshot is what the runtime reported in one round: crictl version, info,
// pods, ps -a, inspect and images, all at once.
type Snapshot struct {
	Time     time.Time
	Endpoint string
	Version  *runtimeapi.VersionResponse
	// Status holds RuntimeReady/NetworkReady and the verbose info map.
	Status *runtimeapi.StatusResponse
	// SandboxImage is the runtime's configured pause image, from the
	// verbose info; empty when the runtime does not say.
	SandboxImage string
	// SandboxImagePresent says whether SandboxImage is in the image store.
	SandboxImagePresent bool
	Sandboxes           []*runtimeapi.PodSandbox
	Containers          []Container
	Images              []*runtimeapi.Image
	ImageFs             *runtimeapi.ImageFsInfoResponse
	// Partial lists the non-essential calls that failed (images, image fs,
	// single container statuses); the snapshot is still usable.
	Partial []error

	sandboxByID map[string]*runtimeapi.PodSandbox
	bySandbox   map[string][]*Container
	// notReadySeen holds, for each NotReady sandbox, when its Source first
	// saw it NotReady.
	notReadySeen map[string]time.Time
	groupsOnce   sync.Once
	groups       []*instances
}

// Container is a listed container with its status.
type Container struct {
	*runtimeapi.Container
	// Status is nil for running containers (not asked: the list has what the
	// checks need) and when ContainerStatus failed (e.g. the container was
	// removed between list and status).
	Status *runtimeapi.ContainerStatus
}

// Sandbox returns the sandbox with the given id, or nil.
func (s *Snapshot) Sandbox(id string) *runtimeapi.PodSandbox { return s.sandboxByID[id] }

// ContainersOf returns the containers of a sandbox.
func (s *Snapshot) ContainersOf(sandboxID string) []*Container { return s.bySandbox[sandboxID] }

// NotReadySeen is when the Source first saw the sandbox NotReady: Time
// itself when this is the first snapshot that shows it so (one-shot check,
// or an agent that just started), zero when it is ready or not listed.
// The runtime does not say when a sandbox stopped, and its creation time
// says nothing about that.
func (s *Snapshot) NotReadySeen(sandboxID string) time.Time { return s.notReadySeen[sandboxID] }

func (s *Snapshot) index() {
	s.sandboxByID = make(map[string]*runtimeapi.PodSandbox, len(s.Sandboxes))
	for _, sb := range s.Sandboxes {
		s.sandboxByID[sb.GetId()] = sb
	}
	s.bySandbox = make(map[string][]*Container, len(s.Sandboxes))
	for i := range s.Containers {
		c := &s.Containers[i]
		s.bySandbox[c.GetPodSandboxId()] = append(s.bySandbox[c.GetPodSandboxId()], c)
	}
}

// Condition returns a runtime condition by type (RuntimeReady,
// NetworkReady), or nil.
func (s *Snapshot) Condition(typ string) *runtimeapi.RuntimeCondition {
	for _, c := range s.Status.GetStatus().GetConditions() {
		if c.GetType() == typ {
			return c
		}
	}
	return nil
}

// PodObject names the pod a sandbox belongs to, from its CRI labels, falling
// back to the sandbox metadata when labels are missing or malformed.
func PodObject(sb *runtimeapi.PodSandbox) check.Object {
	l := sb.GetLabels()
	md := sb.GetMetadata()
	o := check.Object{Kind: check.KindPod, Namespace: l[LabelPodNamespace], Name: l[LabelPodName], UID: l[LabelPodUID]}
	if o.Namespace == "" {
		o.Namespace = md.GetNamespace()
	}
	if o.Name == "" {
		o.Name = md.GetName()
	}
	if o.UID == "" {
		o.UID = md.GetUid()
	}
	if o.Name == "" {
		o.Name = "sandbox " + shortID(sb.GetId())
	}
	return o
}

// ContainerObject names a container and its pod. sb may be nil.
func ContainerObject(sb *runtimeapi.PodSandbox, c *Container) check.Object {
	var o check.Object
	if sb != nil {
		o = PodObject(sb)
	} else {
		l := c.GetLabels()
		o = check.Object{Kind: check.KindPod, Namespace: l[LabelPodNamespace], Name: l[LabelPodName], UID: l[LabelPodUID]}
		if o.Name == "" {
			o.Name = "sandbox " + shortID(c.GetPodSandboxId())
		}
	}
	o.Container = ContainerName(c)
	return o
}

// ContainerName is the Kubernetes container name, or the CRI name.
func ContainerName(c *Container) string {
	if n := c.GetLabels()[LabelContainerName]; n != "" {
		return n
	}
	if n := c.GetMetadata().GetName(); n != "" {
		return n
	}
	return shortID(c.GetId())
}

// SourceOptions tune a Source.
type SourceOptions struct {
	// MaxAge is how long a snapshot is reused; checks of one round share it.
	MaxAge time.Duration
	// Parallel bounds concurrent ContainerStatus calls.
	Parallel int
	// Deadline bounds a whole snapshot; each call also has its own timeout.
	Deadline time.Duration
	Clock    clock.PassiveClock
	Log      *slog.Logger
	// Metrics, when set, is updated from every snapshot.
	Metrics *Metrics
}

// Source takes snapshots and shares them: callers within MaxAge of the last
// snapshot get it again, and concurrent callers wait for one fetch.
type Source struct {
	rt   Runtime
	opts SourceOptions

	mu       sync.Mutex
	last     *Snapshot
	lastErr  error
	lastAt   time.Time
	inflight chan struct{}
	// exited caches statuses of exited containers, which never change.
	exited map[string]*runtimeapi.ContainerStatus
	// notReady holds when each listed NotReady sandbox was first seen so.
	notReady map[string]time.Time
	// podIPs caches the IPs of sandboxes, which never change.
	podIPs map[string][]netip.Addr
}

// Default Source options.
const (
	DefaultMaxAge   = 10 * time.Second
	DefaultParallel = 8
	// DefaultDeadline stays inside the checks' 25s timeout.
	DefaultDeadline = 20 * time.Second
)

// NewSource returns a Source reading from rt.
func NewSource(rt Runtime, o SourceOptions) *Source {
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.Parallel <= 0 {
		o.Parallel = DefaultParallel
	}
	if o.Deadline <= 0 {
		o.Deadline = DefaultDeadline
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Source{rt: rt, opts: o, exited: map[string]*runtimeapi.ContainerStatus{}, notReady: map[string]time.Time{}}
}

// Snapshot returns a snapshot no older than MaxAge, taking one if needed.
// A failed snapshot is shared the same way, so a hung runtime costs one
// timeout per round, not one per check.
func (s *Source) Snapshot(ctx context.Context) (*Snapshot, error) {
	for {
		s.mu.Lock()
		if !s.lastAt.IsZero() && s.opts.Clock.Since(s.lastAt) < s.opts.MaxAge {
			snap, err := s.last, s.lastErr
			s.mu.Unlock()
			return snap, err
		}
		if wait := s.inflight; wait != nil {
			s.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("cri: wait for snapshot: %w", ctx.Err())
			}
		}
		done := make(chan struct{})
		s.inflight = done
		s.mu.Unlock()

		// One caller giving up must not fail the fetch for the others, but a
		// runtime answering every call just inside its timeout must not hold
		// the fetch for ever either.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.Deadline)
		snap, err := s.take(fctx)
		cancel()
		s.mu.Lock()
		s.last, s.lastErr, s.lastAt, s.inflight = snap, err, s.opts.Clock.Now(), nil
		s.mu.Unlock()
		close(done)
		if m := s.opts.Metrics; m != nil {
			m.observe(snap, err)
		}
		return snap, err
	}
}

// Invalidate makes the next Snapshot call fetch afresh.
func (s *Source) Invalidate() {
	s.mu.Lock()
	s.lastAt = time.Time{}
	s.mu.Unlock()
}

func (s *Source) take(ctx context.Context) (*Snapshot, error) {
	snap := &Snapshot{Time: s.opts.Clock.Now()}
	if e, ok := s.rt.(interface{ Endpoint() string }); ok {
		defer func() { snap.Endpoint = e.Endpoint() }()
	}
	var err error
	if snap.Version, err = s.rt.Version(ctx, apiVersion); err != nil {
		return nil, err
	}
	if snap.Status, err = s.rt.Status(ctx, true); err != nil {
		return nil, err
	}
	if snap.Sandboxes, err = s.rt.ListPodSandbox(ctx, nil); err != nil {
		return nil, err
	}
	s.observeSandboxes(snap)
	list, err := s.rt.ListContainers(ctx, nil)
	if err != nil {
		return nil, err
	}
	snap.Containers = make([]Container, len(list))
	for i, c := range list {
		snap.Containers[i].Container = c
	}
	s.containerStatuses(ctx, snap)
	snap.SandboxImage = SandboxImageFromInfo(snap.Status.GetInfo())
	if snap.Images, err = s.rt.ListImages(ctx, nil); err != nil {
		snap.Partial = append(snap.Partial, err)
	}
	if snap.ImageFs, err = s.rt.ImageFsInfo(ctx); err != nil {
		snap.Partial = append(snap.Partial, err)
	}
	if snap.SandboxImage != "" {
		st, err := s.rt.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: snap.SandboxImage}, false)
		if err != nil {
			snap.Partial = append(snap.Partial, err)
			snap.SandboxImagePresent = true // unknown: do not claim it is missing
		} else {
			snap.SandboxImagePresent = st.GetImage() != nil
		}
	}
	snap.index()
	if len(snap.Partial) > 0 {
		s.opts.Log.Debug("cri snapshot incomplete", "failed_calls", len(snap.Partial), "err", errors.Join(snap.Partial...))
	}
	return snap, nil
}

// observeSandboxes records when each sandbox was first seen NotReady and
// forgets sandboxes that are gone or ready.
func (s *Source) observeSandboxes(snap *Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]time.Time{}
	for _, sb := range snap.Sandboxes {
		if sb.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY {
			continue
		}
		at, ok := s.notReady[sb.GetId()]
		if !ok {
			at = snap.Time
		}
		seen[sb.GetId()] = at
	}
	s.notReady = seen
	snap.notReadySeen = seen
}

// containerStatuses fills in the statuses of containers that are not
// running, with bounded concurrency, reusing cached statuses of exited
// containers and pruning the cache to what is still listed.
func (s *Source) containerStatuses(ctx context.Context, snap *Snapshot) {
	var todo []int
	s.mu.Lock()
	seen := make(map[string]bool, len(snap.Containers))
	for i := range snap.Containers {
		c := &snap.Containers[i]
		seen[c.GetId()] = true
		switch c.GetState() {
		case runtimeapi.ContainerState_CONTAINER_RUNNING:
			// The list says all the checks need of a running container;
			// asking each one's status would be most of a round's cost.
			continue
		case runtimeapi.ContainerState_CONTAINER_EXITED:
			if st, ok := s.exited[c.GetId()]; ok {
				c.Status = st
				continue
			}
		}
		todo = append(todo, i)
	}
	for id := range s.exited {
		if !seen[id] {
			delete(s.exited, id)
		}
	}
	s.mu.Unlock()

	// A runtime that stops answering fails the rest fast instead of costing
	// one timeout per container.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(s.opts.Parallel, len(todo)) {
		wg.Go(func() {
			for i := range next {
				c := &snap.Containers[i]
				r, err := s.rt.ContainerStatus(ctx, c.GetId(), false)
				mu.Lock()
				if err != nil {
					snap.Partial = append(snap.Partial, err)
					if status.Code(err) == codes.DeadlineExceeded || status.Code(err) == codes.Unavailable {
						cancel()
					}
				} else {
					c.Status = r.GetStatus()
				}
				mu.Unlock()
			}
		})
	}
	for _, i := range todo {
		next <- i
	}
	close(next)
	wg.Wait()

	s.mu.Lock()
	for _, i := range todo {
		c := &snap.Containers[i]
		if c.Status != nil && c.Status.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED {
			s.exited[c.GetId()] = c.Status
		}
	}
	s.mu.Unlock()
}
