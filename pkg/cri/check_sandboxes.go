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

// SandboxCheck finds pods whose current sandbox is NotReady while it still
// has live containers (or none), and ready sandboxes that have had no
// container for a while: what an image pull failure or a container create
// failure looks like from the node.
func SandboxCheck(src Snapshotter) check.Definition {
	set := &SandboxSettings{NotReadyAfter: time.Minute, EmptyAfter: 3 * time.Minute}
	return check.Definition{
		Name:        "cri-sandboxes",
		Area:        Area,
		Description: "every pod's current sandbox is ready and gets its containers",
		Interval:    checkInterval,
		Timeout:     checkTimeout,
		Settings:    set,
		Check:       fromSnapshot(src, func(s *Snapshot) []check.Finding { return sandboxFindings(s, set) }),
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

func sandboxFindings(s *Snapshot, set *SandboxSettings) []check.Finding {
	var out []check.Finding
	cur := currentSandboxes(s)
	for _, sb := range cur {
		o := PodObject(sb)
		created := unixNano(sb.GetCreatedAt())
		d := map[string]string{"sandbox_id": sb.GetId(), "attempt": fmt.Sprint(sb.GetMetadata().GetAttempt())}
		if !created.IsZero() {
			d["created_at"] = created.UTC().Format(time.RFC3339)
		}
		cs := s.ContainersOf(sb.GetId())
		since := s.Time.Sub(created)
		switch {
		case sb.GetState() != runtimeapi.PodSandboxState_SANDBOX_READY:
			live := 0
			for _, c := range cs {
				if c.GetState() != runtimeapi.ContainerState_CONTAINER_EXITED {
					live++
				}
			}
			// All containers exited: the pod finished (a Job, restartPolicy
			// Never) and kubelet stopped its sandbox on purpose.
			if len(cs) > 0 && live == 0 || since < set.NotReadyAfter {
				continue
			}
			msg := fmt.Sprintf("pod sandbox is NotReady (its pause container or network namespace is gone) but still has %d live container(s)", live)
			if len(cs) == 0 {
				msg = fmt.Sprintf("pod sandbox is NotReady and has no container, %s after it was created", age(since))
			}
			out = append(out, check.Finding{Severity: check.SeverityProblem, Reason: "SandboxNotReady", Object: o, Details: d, Time: created,
				Message: msg + "; kubelet should replace it: if it does not, look for sandbox and CNI errors in the runtime's and kubelet's logs (kubectl describe pod " + orValue(o.Namespace, "default") + "/" + o.Name + ")"})
		case len(cs) == 0 && since >= set.EmptyAfter:
			out = append(out, check.Finding{Severity: check.SeverityProblem, Reason: "SandboxWithoutContainers", Object: o, Details: d, Time: created,
				Message: fmt.Sprintf("pod sandbox has been ready for %s without any container: kubelet cannot create them — usually the image cannot be pulled "+
					"(ErrImagePull/ImagePullBackOff: wrong name or tag, registry unreachable, missing imagePullSecret) or creation fails (bad volume, config or securityContext); "+
					"see the events in kubectl describe pod -n %s %s", age(since), orValue(o.Namespace, "default"), o.Name)})
		}
	}
	if len(out) == 0 {
		out = append(out, ok("", "SandboxesHealthy", fmt.Sprintf("all %d current pod sandboxes are ready with containers, or finished", len(cur))))
	}
	return out
}
