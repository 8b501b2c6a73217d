package cri

import (
	"context"
	"errors"
	"testing"
	"testing/fstest"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/node-doctor/node-doctor/pkg/check"
)

type fakeInspector struct{}

func (fakeInspector) ContainerStatus(_ context.Context, id string, _ bool) (*runtimeapi.ContainerStatusResponse, error) {
	if id == "gone" {
		return nil, errors.New("not found")
	}
	return &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: id, State: runtimeapi.ContainerState_CONTAINER_RUNNING,
		StartedAt: 1, LogPath: "/var/log/pods/web.log"}}, nil
}

func (fakeInspector) PodSandboxStatus(_ context.Context, id string, _ bool) (*runtimeapi.PodSandboxStatusResponse, error) {
	return &runtimeapi.PodSandboxStatusResponse{
		Status: &runtimeapi.PodSandboxStatus{Id: id, Network: &runtimeapi.PodSandboxNetworkStatus{Ip: "10.244.0.7"}},
		Info:   map[string]string{"info": `{"pid":1,"config":{"metadata":{"name":"web"},"dns_config":{"servers":["10.96.0.10"],"searches":["shop.svc.cluster.local","svc.cluster.local"],"options":["ndots:5"]}}}`},
	}, nil
}

func explainSnap(ctrs ...Container) *Snapshot {
	sb := &runtimeapi.PodSandbox{Id: "sb1", State: runtimeapi.PodSandboxState_SANDBOX_READY, CreatedAt: 10,
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "shop", Uid: "u1"},
		Labels:   map[string]string{LabelPodName: "web", LabelPodNamespace: "shop", LabelPodUID: "u1"}}
	other := &runtimeapi.PodSandbox{Id: "sb2", State: runtimeapi.PodSandboxState_SANDBOX_READY,
		Labels: map[string]string{LabelPodName: "other", LabelPodNamespace: "shop"}}
	s := &Snapshot{Endpoint: "unix:///run/containerd/containerd.sock", Sandboxes: []*runtimeapi.PodSandbox{sb, other}, Containers: ctrs}
	s.index()
	return s
}

func explainCtr(id string, attempt uint32, st *runtimeapi.ContainerStatus) Container {
	state := runtimeapi.ContainerState_CONTAINER_RUNNING
	if st != nil {
		state = st.State
	}
	return Container{Container: &runtimeapi.Container{Id: id, PodSandboxId: "sb1", State: state,
		Metadata: &runtimeapi.ContainerMetadata{Name: "app", Attempt: attempt}}, Status: st}
}

func TestExplainPod(t *testing.T) {
	fsys := fstest.MapFS{
		"var/log/pods/web.log": {Data: []byte("2026-12-07T08:00:00Z stdout F serving on :8080\n")},
		"var/log/pods/old.log": {Data: []byte("2026-12-07T07:59:00Z stderr F out of memory\n")},
	}
	oom := &runtimeapi.ContainerStatus{Id: "c1", State: runtimeapi.ContainerState_CONTAINER_EXITED, ExitCode: 137, Reason: "OOMKilled",
		FinishedAt: 5, LogPath: "/var/log/pods/old.log"}
	findings := []check.Finding{
		{Check: "cri-oom-killed", Severity: check.SeverityProblem, Reason: "OOMKilled", Object: check.Object{Kind: check.KindPod, Namespace: "shop", Name: "web"}},
		{Check: "cri-crash-loop", Severity: check.SeverityProblem, Reason: "CrashLoop", Object: check.Object{Kind: check.KindPod, Namespace: "shop", Name: "other"}},
	}
	snap := explainSnap(explainCtr("c1", 0, oom), explainCtr("c2", 1, nil))
	p, ok := ExplainPod(context.Background(), snap, fakeInspector{}, fsys, "shop", "web", findings)
	if !ok || len(p.Sandboxes) != 1 {
		t.Fatalf("ok %v: %+v", ok, p)
	}
	sb := p.Sandboxes[0]
	if sb.IP != "10.244.0.7" || sb.DNS == nil || sb.DNS.Servers[0] != "10.96.0.10" || sb.DNS.Options[0] != "ndots:5" || len(sb.DNS.Searches) != 2 {
		t.Errorf("sandbox: %+v dns %+v", sb, sb.DNS)
	}
	if len(sb.Containers) != 2 {
		t.Fatalf("containers: %+v", sb.Containers)
	}
	cur, old := sb.Containers[0], sb.Containers[1]
	if cur.Attempt != 1 || cur.State != "RUNNING" || cur.LastLines != "serving on :8080" || cur.Started.IsZero() {
		t.Errorf("running container (status asked): %+v", cur)
	}
	if !old.OOMKilled || old.ExitCode != 137 || old.State != "EXITED" || old.LastLines != "out of memory" {
		t.Errorf("OOM-killed container: %+v", old)
	}
	if len(p.Findings) != 1 || p.Findings[0].Reason != "OOMKilled" {
		t.Errorf("findings: %+v", p.Findings)
	}
	if !p.Broken() {
		t.Error("a pod with a problem finding is not broken")
	}
	p.Findings = nil
	if p.Broken() {
		t.Error("the newest attempt runs and nothing was found: not broken")
	}
	if _, ok := ExplainPod(context.Background(), snap, fakeInspector{}, fsys, "shop", "nope", nil); ok {
		t.Error("a pod without a sandbox here was found")
	}
}

func TestExplainPodExitedNewest(t *testing.T) {
	crashed := &runtimeapi.ContainerStatus{Id: "c3", State: runtimeapi.ContainerState_CONTAINER_EXITED, ExitCode: 1}
	p, _ := ExplainPod(context.Background(), explainSnap(explainCtr("c3", 4, crashed), explainCtr("gone", 0, nil)), fakeInspector{}, nil, "shop", "web", nil)
	if !p.Broken() {
		t.Errorf("newest attempt exited 1: not broken: %+v", p)
	}
	if c := p.Sandboxes[0].Containers[1]; c.LogProblem == "" {
		t.Errorf("status failure not said: %+v", c)
	}
}

func TestSandboxDNS(t *testing.T) {
	for _, info := range []map[string]string{nil, {"info": "not json"}, {"info": `{"config":{}}`}} {
		if d := SandboxDNS(info); d != nil {
			t.Errorf("%v: %+v", info, d)
		}
	}
}
