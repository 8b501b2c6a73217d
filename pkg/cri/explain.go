package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// PodExplanation is `crictl inspectp` + `crictl ps -a` + `crictl logs
// --tail` for one pod on this node, with what node-doctor found about it.
type PodExplanation struct {
	Pod      string `json:"pod"`
	Node     string `json:"node"`
	Endpoint string `json:"runtime_endpoint"`
	// Sandboxes are the pod's sandboxes on this node, newest first.
	Sandboxes []SandboxExplanation `json:"sandboxes"`
	// Findings are every current finding about the pod.
	Findings []check.Finding `json:"findings,omitempty"`
}

// SandboxExplanation is one sandbox and its containers.
type SandboxExplanation struct {
	ID      string    `json:"id"`
	State   string    `json:"state"`
	IP      string    `json:"ip,omitempty"`
	Attempt uint32    `json:"attempt"`
	Created time.Time `json:"created"`
	// DNS is the resolv.conf the runtime wrote for the pod, when it says.
	DNS        *DNSConfig             `json:"dns,omitempty"`
	Problem    string                 `json:"problem,omitempty"`
	Containers []ContainerExplanation `json:"containers"`
}

// ContainerExplanation is one container's state, as crictl inspect has it.
type ContainerExplanation struct {
	Name       string    `json:"name"`
	ID         string    `json:"id"`
	Image      string    `json:"image"`
	State      string    `json:"state"`
	Attempt    uint32    `json:"attempt"`
	ExitCode   int32     `json:"exit_code"`
	Reason     string    `json:"reason,omitempty"`
	Message    string    `json:"message,omitempty"`
	Started    time.Time `json:"started,omitzero"`
	Finished   time.Time `json:"finished,omitzero"`
	OOMKilled  bool      `json:"oom_killed,omitempty"`
	LastLines  string    `json:"last_lines,omitempty"`
	LogProblem string    `json:"log_problem,omitempty"`
}

// Inspector is what explain asks the runtime besides a snapshot: the status
// of running containers and of sandboxes, which the snapshot does not hold.
type Inspector interface {
	ContainerStatus(ctx context.Context, id string, verbose bool) (*runtimeapi.ContainerStatusResponse, error)
	PodSandboxStatus(ctx context.Context, id string, verbose bool) (*runtimeapi.PodSandboxStatusResponse, error)
}

// Lines of each container's log explain shows.
const explainLogLines = 10

// ExplainPod gathers the pod's sandboxes and containers from snap (asking
// st for running containers' status), the end of each container's log from
// hostFS, and the findings about it. ok is false when no sandbox of the pod
// is on this node.
func ExplainPod(ctx context.Context, snap *Snapshot, st Inspector, hostFS fs.FS, namespace, name string, findings []check.Finding) (*PodExplanation, bool) {
	out := &PodExplanation{Pod: namespace + "/" + name, Endpoint: snap.Endpoint}
	for _, sb := range snap.Sandboxes {
		o := PodObject(sb)
		if o.Namespace != namespace || o.Name != name {
			continue
		}
		se := SandboxExplanation{ID: sb.GetId(), State: strings.TrimPrefix(sb.GetState().String(), "SANDBOX_"),
			Attempt: sb.GetMetadata().GetAttempt(), Created: time.Unix(0, sb.GetCreatedAt()).UTC()}
		if st != nil {
			if r, err := st.PodSandboxStatus(ctx, sb.GetId(), true); err == nil {
				se.IP = r.GetStatus().GetNetwork().GetIp()
				se.DNS = SandboxDNS(r.GetInfo())
			} else {
				se.Problem = err.Error()
			}
		}
		for _, c := range snap.ContainersOf(sb.GetId()) {
			se.Containers = append(se.Containers, explainContainer(ctx, c, st, hostFS))
		}
		slices.SortFunc(se.Containers, func(a, b ContainerExplanation) int {
			if a.Name != b.Name {
				return strings.Compare(a.Name, b.Name)
			}
			return int(b.Attempt) - int(a.Attempt)
		})
		out.Sandboxes = append(out.Sandboxes, se)
	}
	if len(out.Sandboxes) == 0 {
		return out, false
	}
	slices.SortFunc(out.Sandboxes, func(a, b SandboxExplanation) int { return b.Created.Compare(a.Created) })
	for _, f := range findings {
		if f.Object.Kind == check.KindPod && f.Object.Namespace == namespace && f.Object.Name == name {
			out.Findings = append(out.Findings, f)
		}
	}
	return out, true
}

func explainContainer(ctx context.Context, c *Container, st Inspector, hostFS fs.FS) ContainerExplanation {
	ce := ContainerExplanation{Name: c.GetMetadata().GetName(), ID: c.GetId(), Image: c.GetImage().GetImage(),
		State: strings.TrimPrefix(c.GetState().String(), "CONTAINER_"), Attempt: c.GetMetadata().GetAttempt()}
	if ce.Name == "" {
		ce.Name = c.GetLabels()[LabelContainerName]
	}
	s := c.Status
	if s == nil && st != nil {
		if r, err := st.ContainerStatus(ctx, c.GetId(), false); err == nil {
			s = r.GetStatus()
		} else {
			ce.LogProblem = fmt.Sprintf("no status: %v", err)
		}
	}
	if s == nil {
		return ce
	}
	if s.GetImage().GetImage() != "" {
		ce.Image = s.GetImage().GetImage()
	}
	ce.State = strings.TrimPrefix(s.GetState().String(), "CONTAINER_")
	ce.ExitCode, ce.Reason, ce.Message = s.GetExitCode(), s.GetReason(), s.GetMessage()
	ce.OOMKilled = s.GetReason() == "OOMKilled"
	if t := s.GetStartedAt(); t > 0 {
		ce.Started = time.Unix(0, t).UTC()
	}
	if t := s.GetFinishedAt(); t > 0 {
		ce.Finished = time.Unix(0, t).UTC()
	}
	if hostFS != nil {
		lines, err := TailLog(hostFS, s.GetLogPath(), explainLogLines, 4*LogTailBytes)
		if err != nil {
			ce.LogProblem = err.Error()
		}
		ce.LastLines = lines
	}
	return ce
}

// Broken says the pod needs attention: a problem or warning about it, or a
// container that is not running and did not exit 0.
func (p *PodExplanation) Broken() bool {
	for _, f := range p.Findings {
		if f.Severity == check.SeverityProblem || f.Severity == check.SeverityWarning {
			return true
		}
	}
	if len(p.Sandboxes) == 0 {
		return true
	}
	sb := p.Sandboxes[0]
	if sb.State != "READY" {
		return true
	}
	latest := map[string]ContainerExplanation{}
	for _, c := range sb.Containers {
		if l, ok := latest[c.Name]; !ok || c.Attempt > l.Attempt {
			latest[c.Name] = c
		}
	}
	for _, c := range latest {
		if c.State != "RUNNING" && !(c.State == "EXITED" && c.ExitCode == 0) {
			return true
		}
	}
	return false
}

// DNSConfig is a pod's resolv.conf as the kubelet asked the runtime for it.
type DNSConfig struct {
	Servers  []string `json:"servers"`
	Searches []string `json:"searches,omitempty"`
	Options  []string `json:"options,omitempty"`
}

// SandboxDNS reads the DNS config from a verbose PodSandboxStatus info map
// (containerd's "info" JSON holds the sandbox config); nil when absent.
func SandboxDNS(info map[string]string) *DNSConfig {
	raw, ok := info["info"]
	if !ok {
		return nil
	}
	var v struct {
		Config struct {
			DNSConfig *DNSConfig `json:"dns_config"`
		} `json:"config"`
	}
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		return nil
	}
	return v.Config.DNSConfig
}
