package cri

import (
	"fmt"
	"sort"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// SandboxSettings tune the sandbox check.
type SandboxSettings struct {
	// NotReadyAfter is how old a NotReady sandbox must be to be reported;
	// kubelet normally replaces one within seconds.
	NotReadyAfter time.Duration `yaml:"notReadyAfter"`
	// EmptyAfter is how long a ready sandbox may have no container at all.
	EmptyAfter time.Duration `yaml:"emptyAfter"`
}

// Validate checks the ranges.
func (s *SandboxSettings) Validate() error {
	if err := positive("notReadyAfter", s.NotReadyAfter); err != nil {
		return err
	}
	return positive("emptyAfter", s.EmptyAfter)
}

// SandboxCheck finds pods whose current sandbox stays NotReady while kubelet
// should have replaced it, and ready sandboxes that have had no container
// for a while: what an image pull failure or a container create failure
// looks like from the node. pods may be nil (no cluster).
func SandboxCheck(src Snapshotter, pods Pods) check.Definition {
	set := &SandboxSettings{NotReadyAfter: time.Minute, EmptyAfter: 3 * time.Minute}
	return check.Definition{
		Name:        "cri-sandboxes",
		Area:        Area,
		Description: "every pod's current sandbox is ready and gets its containers",
		Interval:    checkInterval,
		Timeout:     checkTimeout,
		Settings:    set,
		Check:       fromSnapshot(src, func(s *Snapshot) []check.Finding { return sandboxFindings(s, set, pods) }),
	}
}

// currentSandboxes keeps the newest sandbox of each pod; older ones are
// leftovers kubelet replaced.
func currentSandboxes(s *Snapshot) []*runtimeapi.PodSandbox {
	byPod := map[string]*runtimeapi.PodSandbox{}
	var order []string
	for _, sb := range s.Sandboxes {
		k := PodObject(sb).UID
		if k == "" {
			k = "id:" + sb.GetId()
		}
		cur, ok := byPod[k]
		if !ok {
			order = append(order, k)
		}
		if !ok || sb.GetMetadata().GetAttempt() > cur.GetMetadata().GetAttempt() ||
			(sb.GetMetadata().GetAttempt() == cur.GetMetadata().GetAttempt() && sb.GetCreatedAt() > cur.GetCreatedAt()) {
			byPod[k] = sb
		}
	}
	out := make([]*runtimeapi.PodSandbox, 0, len(order))
	names := make(map[*runtimeapi.PodSandbox]string, len(order))
	for _, k := range order {
		out = append(out, byPod[k])
		names[byPod[k]] = PodObject(byPod[k]).String()
	}
	sort.SliceStable(out, func(i, j int) bool { return names[out[i]] < names[out[j]] })
	return out
}

// replacedByName says whether a newer ready sandbox has the same pod
// namespace and name: the pod was deleted and created again (a StatefulSet
// replica, a static pod) and this one is the old pod's leftover.
func replacedByName(s *Snapshot, sb *runtimeapi.PodSandbox) bool {
	o := PodObject(sb)
	for _, other := range s.Sandboxes {
		if other == sb || !sandboxReady(other) || other.GetCreatedAt() <= sb.GetCreatedAt() {
			continue
		}
		if p := PodObject(other); p.Namespace == o.Namespace && p.Name == o.Name {
			return true
		}
	}
	return false
}

// notReadySince is the earliest real evidence of when sb stopped: when this
// agent first saw it NotReady or, for a sandbox whose containers have all
// exited, when the last of them finished (kubelet stops a sandbox right
// after its containers). Never its creation: a pod that ran for an hour and
// was deleted a second ago has not been NotReady for an hour.
func notReadySince(s *Snapshot, sb *runtimeapi.PodSandbox, cs []*Container) (time.Time, string) {
	since, from := s.NotReadySeen(sb.GetId()), "first_seen"
	if since.IsZero() {
		since = s.Time
	}
	var last time.Time
	for _, c := range cs {
		if c.GetState() != runtimeapi.ContainerState_CONTAINER_EXITED {
			return since, from
		}
		if fin := unixNano(c.Status.GetFinishedAt()); fin.After(last) {
			last = fin
		}
	}
	if !last.IsZero() && last.Before(since) {
		return last, "containers_finished"
	}
	return since, from
}

func sandboxFindings(s *Snapshot, set *SandboxSettings, pods Pods) []check.Finding {
	var out []check.Finding
	cur := currentSandboxes(s)
	leaving := 0
	for _, sb := range cur {
		o := PodObject(sb)
		created := unixNano(sb.GetCreatedAt())
		d := map[string]string{"sandbox_id": sb.GetId(), "attempt": fmt.Sprint(sb.GetMetadata().GetAttempt())}
		if !created.IsZero() {
			d["created_at"] = created.UTC().Format(time.RFC3339)
		}
		cs := s.ContainersOf(sb.GetId())
		life, _ := lookupPod(pods, o)
		if life == podGone || life == podTerminating || life == podFinished {
			// kubelet is tearing it down, or it ran to completion.
			leaving++
			continue
		}
		switch {
		case sb.GetState() != runtimeapi.PodSandboxState_SANDBOX_READY:
			if replacedByName(s, sb) {
				continue
			}
			live := 0
			for _, c := range cs {
				if st := c.GetState(); st == runtimeapi.ContainerState_CONTAINER_RUNNING || st == runtimeapi.ContainerState_CONTAINER_UNKNOWN {
					live++
				}
			}
			// Nothing running and no API to ask: the pod finished (a Job,
			// restartPolicy Never) or was deleted, and kubelet stopped its
			// sandbox on purpose. A deleted pod's sandbox stays, without
			// containers, until kubelet's garbage collection (every minute)
			// removes it: 43 s on the harness node.
			if live == 0 && life == podUnknown {
				leaving++
				continue
			}
			since, from := notReadySince(s, sb, cs)
			down := s.Time.Sub(since)
			if down < set.NotReadyAfter {
				leaving++
				continue
			}
			d["not_ready_since"] = since.UTC().Format(time.RFC3339)
			d["not_ready_since_from"] = from
			var msg string
			switch {
			case live > 0:
				msg = fmt.Sprintf("pod sandbox has been NotReady (its pause container or network namespace is gone) for %s but still has %d live container(s)", age(down), live)
			case len(cs) == 0:
				msg = fmt.Sprintf("pod sandbox has been NotReady for %s and has no container", age(down))
			default:
				msg = fmt.Sprintf("pod sandbox has been NotReady for %s, all its containers exited, and the pod is neither finished nor being deleted", age(down))
			}
			out = append(out, check.Finding{Severity: check.SeverityProblem, Reason: "SandboxNotReady", Object: o, Details: d, Time: since,
				Message: msg + "; kubelet should replace it: if it does not, look for sandbox and CNI errors in the runtime's and kubelet's logs (kubectl describe pod " + orValue(o.Namespace, "default") + "/" + o.Name + ")"})
		case len(cs) == 0 && s.Time.Sub(created) >= set.EmptyAfter:
			out = append(out, check.Finding{Severity: check.SeverityProblem, Reason: "SandboxWithoutContainers", Object: o, Details: d, Time: created,
				Message: fmt.Sprintf("pod sandbox has been ready for %s without any container: kubelet cannot create them — usually the image cannot be pulled "+
					"(ErrImagePull/ImagePullBackOff: wrong name or tag, registry unreachable, missing imagePullSecret) or creation fails (bad volume, config or securityContext); "+
					"see the events in kubectl describe pod -n %s %s", age(s.Time.Sub(created)), orValue(o.Namespace, "default"), o.Name)})
		}
	}
	if len(out) == 0 {
		msg := fmt.Sprintf("all %d current pod sandboxes are ready with containers", len(cur))
		if leaving > 0 {
			msg = fmt.Sprintf("all %d current pod sandboxes are ready with containers, or stopped as they should be (%d: finished, being deleted, or NotReady for less than %s)",
				len(cur), leaving, set.NotReadyAfter)
		}
		out = append(out, ok("", "SandboxesHealthy", msg))
	}
	return out
}
