package cri

import (
	"context"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critest "k8s.io/cri-api/pkg/apis/testing"

	"github.com/node-doctor/node-doctor/pkg/check"
)

const (
	exited  = runtimeapi.ContainerState_CONTAINER_EXITED
	running = runtimeapi.ContainerState_CONTAINER_RUNNING
	created = runtimeapi.ContainerState_CONTAINER_CREATED
	unknown = runtimeapi.ContainerState_CONTAINER_UNKNOWN
)

// brokenNode is a node with one of every problem and some healthy pods.
func brokenNode() (fakeRuntime, fstest.MapFS, time.Time) {
	now := t0.Add(time.Hour)
	rt := newFakeRuntime()
	sbs := map[string]*critest.FakePodSandbox{
		"healthy":  sandbox("sb-healthy", "default", "web", true, t0),
		"crash":    sandbox("sb-crash", "shop", "api", true, t0),
		"zero":     sandbox("sb-zero", "shop", "worker", true, t0),
		"oom":      sandbox("sb-oom", "batch", "hog", true, t0),
		"empty":    sandbox("sb-empty", "default", "noimage", true, now.Add(-10*time.Minute)),
		"fresh":    sandbox("sb-fresh", "default", "starting", true, now.Add(-10*time.Second)),
		"dead":     sandbox("sb-dead", "default", "lostnet", false, t0),
		"finished": sandbox("sb-job", "default", "job", false, t0),
		"stuck":    sandbox("sb-stuck", "default", "stuck", true, t0),
		"old":      sandbox("sb-old", "default", "web", false, t0.Add(-time.Hour)), // replaced by sb-healthy
	}
	sbs["old"].Metadata.Uid, sbs["old"].Labels[LabelPodUID] = sbs["healthy"].Metadata.Uid, sbs["healthy"].Metadata.Uid
	sbs["healthy"].Metadata.Attempt = 1
	var list []*critest.FakePodSandbox
	for _, sb := range sbs {
		list = append(list, sb)
	}
	rt.SetFakeSandboxes(list)
	fin := now.Add(-30 * time.Second)
	cs := []ctr{
		{id: "c-web", sandbox: "sb-healthy", name: "web", attempt: 0, state: running},
		{id: "c-api-3", sandbox: "sb-crash", name: "api", attempt: 3, state: exited, exit: 1, reason: "Error", finished: fin, logPath: "/var/log/pods/shop_api_uid/api/3.log"},
		{id: "c-api-2", sandbox: "sb-crash", name: "api", attempt: 2, state: exited, exit: 1, reason: "Error", finished: fin.Add(-time.Minute)},
		{id: "c-side", sandbox: "sb-crash", name: "sidecar", attempt: 0, state: running},
		{id: "c-zero", sandbox: "sb-zero", name: "worker", attempt: 5, state: exited, exit: 0, reason: "Completed", finished: fin},
		{id: "c-hog-2", sandbox: "sb-oom", name: "hog", attempt: 2, state: running},
		{id: "c-hog-1", sandbox: "sb-oom", name: "hog", attempt: 1, state: exited, exit: 137, reason: "OOMKilled", finished: fin, memLimit: 32 << 20},
		{id: "c-lost", sandbox: "sb-dead", name: "app", state: running},
		{id: "c-job", sandbox: "sb-job", name: "job", state: exited, exit: 0, reason: "Completed", finished: fin},
		{id: "c-created", sandbox: "sb-stuck", name: "init", state: created, created: now.Add(-5 * time.Minute)},
		{id: "c-unknown", sandbox: "sb-stuck", name: "app", state: unknown, created: now.Add(-5 * time.Minute)},
		// An old crash loop that stopped long ago is history, not a problem.
		{id: "c-old", sandbox: "sb-healthy", name: "migrate", attempt: 4, state: exited, exit: 1, reason: "Error", finished: now.Add(-50 * time.Minute)},
	}
	var fcs []*critest.FakeContainer
	for _, c := range cs {
		var sb *critest.FakePodSandbox
		for _, s := range sbs {
			if s.Id == c.sandbox {
				sb = s
			}
		}
		fcs = append(fcs, c.fake(sb))
	}
	rt.SetFakeContainers(fcs)
	var log strings.Builder
	for i := range 100 {
		log.WriteString("2026-11-23T12:59:00.000000000Z stdout F starting attempt " + string(rune('a'+i%26)) + "\n")
	}
	log.WriteString("2026-11-23T12:59:30.000000000Z stderr F panic: dial tcp 10.0.0.5:5432: connect: connection refused\n")
	hostFS := fstest.MapFS{
		"var/log/pods/shop_api_uid/api/3.log": {Data: []byte(log.String())},
		"etc/cni/net.d/.keep":                 {},
	}
	return rt, hostFS, now
}

func TestChecksOnABrokenNode(t *testing.T) {
	rt, hostFS, now := brokenNode()
	// The agent saw the lost sandbox NotReady two minutes ago.
	s := agentSnapshot(t, rt, now.Add(-2*time.Minute), now)
	src := staticSource{s: s}
	want := map[string][]string{
		"cri-runtime":          {"ok RuntimeResponding node"},
		"cri-runtime-ready":    {"ok RuntimeReady node"},
		"cri-network-ready":    {"ok NetworkReady node"},
		"cri-sandbox-image":    {"ok SandboxImageNotReported node"},
		"cri-crash-loop":       {"problem CrashLoop Pod shop/api container api"},
		"cri-restart-loop":     {"problem StartBackgroundMistake Pod shop/worker container worker"},
		"cri-oom-killed":       {"problem OOMKilled Pod batch/hog container hog"},
		"cri-sandboxes":        {"problem SandboxNotReady Pod default/lostnet", "problem SandboxWithoutContainers Pod default/noimage"},
		"cri-stuck-containers": {"problem ContainerStateUnknown Pod default/stuck container app", "problem ContainerStuckCreated Pod default/stuck container init"},
	}
	byName := map[string][]check.Finding{}
	for _, def := range allChecks(src, hostFS) {
		f, err := def.Check.Run(context.Background())
		if err != nil {
			t.Errorf("%s: %v", def.Name, err)
			continue
		}
		byName[def.Name] = f
		if got := reasons(f); strings.Join(got, "|") != strings.Join(want[def.Name], "|") {
			t.Errorf("%s:\n  got  %q\n  want %q", def.Name, got, want[def.Name])
		}
		for _, x := range f {
			if x.Message == "" || strings.Contains(x.Message, "\n") {
				t.Errorf("%s %s: message must be one non-empty line: %q", def.Name, x.Reason, x.Message)
			}
			if !x.Object.IsNode() && (x.Object.Kind != check.KindPod || x.Object.UID == "") {
				t.Errorf("%s %s: object %+v", def.Name, x.Reason, x.Object)
			}
		}
	}
	crash := byName["cri-crash-loop"][0]
	for _, s := range []string{"exits with code 1 (Error)", "restart 3", "kubectl logs -n shop api -c api --previous"} {
		if !strings.Contains(crash.Message, s) {
			t.Errorf("crash loop message lacks %q: %s", s, crash.Message)
		}
	}
	// What the container wrote stays out of the message (and so of Events).
	if want := `last log line: "panic: dial tcp 10.0.0.5:5432: connect: connection refused"`; !strings.Contains(crash.LogExcerpt, want) || strings.Contains(crash.Message, "panic:") {
		t.Errorf("log excerpt %q / message %q", crash.LogExcerpt, crash.Message)
	}
	if tail := crash.Details["log_tail"]; strings.Count(tail, "\n") != 79 || !strings.HasSuffix(tail, "connection refused") {
		t.Errorf("log tail: %d lines, %q", strings.Count(tail, "\n")+1, tail)
	}
	if crash.Details["exit_code"] != "1" || crash.Details["attempt"] != "3" || crash.Time.IsZero() {
		t.Errorf("crash details: %v %v", crash.Details, crash.Time)
	}
	if m := byName["cri-restart-loop"][0].Message; !strings.Contains(m, "start-background mistake") || !strings.Contains(m, "code 0") {
		t.Errorf("restart loop message: %s", m)
	}
	if m := byName["cri-oom-killed"][0].Message; !strings.Contains(m, "of 32 MiB") || !strings.Contains(m, "exit code 137") {
		t.Errorf("oom message: %s", m)
	}
}

func TestRuntimeConditionsFalse(t *testing.T) {
	rt := newFakeRuntime()
	rt.FakeStatus = &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
		{Type: "RuntimeReady", Status: false, Reason: "ShimsDead", Message: "cannot reach shims"},
		{Type: "NetworkReady", Status: false, Reason: "NetworkPluginNotReady", Message: "Network plugin returns error: cni plugin not initialized"},
	}}
	s := mustSnapshot(t, rt, t0)
	s.Status.Info = map[string]string{"config": `{"cni":{"binDir":"/opt/cni/bin","confDir":"/etc/cni/net.d"},"sandboxImage":"registry.k8s.io/pause:3.9"}`}
	f := runtimeReadyFindings(s)
	if f[0].Reason != "RuntimeNotReady" || f[0].Severity != check.SeverityProblem || !strings.Contains(f[0].Message, "ShimsDead: cannot reach shims") {
		t.Errorf("%+v", f)
	}
	for _, tt := range []struct {
		fs   fstest.MapFS
		want string
	}{
		{fstest.MapFS{"etc/cni/net.d/README": {}}, "the CNI config dir /etc/cni/net.d holds no .conf/.conflist file"},
		{fstest.MapFS{"etc/cni/net.d/10-flannel.conflist": {}}, "holds 10-flannel.conflist but the runtime did not load it"},
		{fstest.MapFS{}, "the CNI config dir /etc/cni/net.d cannot be read"},
	} {
		f = networkReadyFindings(s, tt.fs)
		if f[0].Reason != "NetworkNotReady" || f[0].Condition != check.ConditionNetworkConfig || !strings.Contains(f[0].Message, tt.want) ||
			!strings.Contains(f[0].Message, "cni plugin not initialized") || !strings.Contains(f[0].Message, "/opt/cni/bin") {
			t.Errorf("want %q in %+v", tt.want, f[0])
		}
	}
}

func TestSandboxImage(t *testing.T) {
	rt := newFakeRuntime()
	s := mustSnapshot(t, rt, t0)
	s.SandboxImage, s.SandboxImagePresent = "registry.k8s.io/pause:3.9", false
	if f := sandboxImageFindings(s); f[0].Reason != "SandboxImageMissing" || f[0].Severity != check.SeverityWarning {
		t.Errorf("no pods yet: %+v", f)
	}
	s.Sandboxes = []*runtimeapi.PodSandbox{{Id: "x"}}
	if f := sandboxImageFindings(s); f[0].Severity != check.SeverityProblem || !strings.Contains(f[0].Message, "registry.k8s.io/pause:3.9") {
		t.Errorf("with pods: %+v", f)
	}
	// Through the Source: the image store is asked about the configured image.
	rt.SetFakeImages([]string{"registry.k8s.io/pause:3.9"})
	info := map[string]string{"config": `{"sandboxImage":"registry.k8s.io/pause:3.9"}`}
	withInfo := infoRuntime{rt, info}
	if s := mustSnapshot(t, withInfo, t0); s.SandboxImage != "registry.k8s.io/pause:3.9" || !s.SandboxImagePresent {
		t.Errorf("present: %q %v", s.SandboxImage, s.SandboxImagePresent)
	}
	rt.SetFakeImages(nil)
	if s := mustSnapshot(t, withInfo, t0); s.SandboxImagePresent {
		t.Error("missing image reported present")
	}
}

// infoRuntime adds a verbose info map to the fake's Status.
type infoRuntime struct {
	fakeRuntime
	info map[string]string
}

func (r infoRuntime) Status(ctx context.Context, verbose bool) (*runtimeapi.StatusResponse, error) {
	st, err := r.fakeRuntime.FakeRuntimeService.Status(ctx, verbose)
	if err == nil {
		st.Info = r.info
	}
	return st, err
}

func TestSourceSharesOneSnapshotPerRound(t *testing.T) {
	rt, _, now := brokenNode()
	clk := &fakeClock{now}
	src := NewSource(rt, SourceOptions{Clock: clk, MaxAge: 10 * time.Second})
	for range 5 {
		if _, err := src.Snapshot(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	count := func(m string) int {
		n := 0
		for _, c := range rt.FakeRuntimeService.GetCalls() {
			if c == m {
				n++
			}
		}
		return n
	}
	if count("ListContainers") != 1 {
		t.Errorf("5 checks in one round made %d snapshots", count("ListContainers"))
	}
	statuses := count("ContainerStatus")
	clk.now = clk.now.Add(11 * time.Second)
	if _, err := src.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Exited containers' statuses are cached: running ones are never asked, so only the created and the unknown one are.
	if n := count("ContainerStatus") - statuses; count("ListContainers") != 2 || n != 2 {
		t.Errorf("next round: %d snapshots, %d status calls", count("ListContainers"), n)
	}
}

// The runner starts all checks at once: they must share one snapshot.
func TestConcurrentChecksShareOneSnapshot(t *testing.T) {
	rt, hostFS, now := brokenNode()
	src := NewSource(rt, SourceOptions{Clock: &fakeClock{now}})
	defs := allChecks(src, hostFS)
	ptrs := make([]*check.Definition, len(defs))
	for i := range defs {
		ptrs[i] = &defs[i]
	}
	for _, r := range check.NewRunner(ptrs, nil, nil).RunOnce(context.Background()) {
		if r.Status == check.StatusError {
			t.Errorf("%s: %v", r.Check, r.Err)
		}
	}
	n := 0
	for _, c := range rt.FakeRuntimeService.GetCalls() {
		if c == "ListContainers" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d checks run together took %d snapshots", len(defs), n)
	}
}
