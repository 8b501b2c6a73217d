package kernel

import (
	"context"
	"os"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/node-doctor/node-doctor/pkg/check"
)

type fakePods map[string]check.Object // by pod UID or container ID

func (f fakePods) Attribute(_ context.Context, uid, cid string) (check.Object, bool) {
	if o, ok := f[cid]; ok {
		return o, true
	}
	o, ok := f[uid]
	return o, ok
}

// An OOM kill whose task_memcg names a pod is reported on that pod.
func TestOOMAttributedToPod(t *testing.T) {
	const cid = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
	fake := &fakeKmsg{items: []any{
		[]byte("3,19,9920000000,-;Memory cgroup out of memory: Killed process 2 (bare) total-vm:1kB, anon-rss:1kB, file-rss:0kB\n"),
		[]byte("4,20,9930000000,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=0f1e2d3c4b5a,mems_allowed=0,oom_memcg=/kubepods/burstable/pod7d8e9f00-1111-2222-3333-444455556666/" + cid + ",task_memcg=/kubepods/burstable/pod7d8e9f00-1111-2222-3333-444455556666/" + cid + ",task=java,pid=777,uid=1000\n"),
		[]byte("3,21,9930000001,-;Memory cgroup out of memory: Killed process 777 (java) total-vm:1kB, anon-rss:1kB, file-rss:0kB\n"),
	}}
	fsys := kmsgFS{MapFS: fstest.MapFS{"proc/uptime": {Data: []byte("10000.00 1.00\n")}}, fake: fake}
	pod := check.Object{Kind: check.KindPod, Namespace: "shop", Name: "api-0", UID: "7d8e9f00-1111-2222-3333-444455556666", Container: "java"}
	def := Log(fsys, clocktesting.NewFakeClock(time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC)), fakePods{cid: pod})
	got, err := def.Check.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var onPod, onNode int
	for _, f := range got {
		if f.Reason != "OOMKilling" {
			continue
		}
		switch f.Object {
		case pod:
			onPod++
			if f.Details["container_id"] != cid {
				t.Errorf("attributed finding lost its container ID: %v", f.Details)
			}
		case check.Object{}:
			onNode++
		default:
			t.Errorf("OOM finding on %v", f.Object)
		}
	}
	if onPod != 1 || onNode != 1 {
		t.Fatalf("OOM findings: %d on the pod, %d on the node; want 1 and 1: %+v", onPod, onNode, got)
	}
}

// Condition types from rule files count as owned, so the agent writes them.
func TestConditionTypesIncludeRuleFiles(t *testing.T) {
	dir := t.TempDir()
	rules := `{"plugin":"kmsg","logPath":"/dev/kmsg","lookback":"5m","bufferSize":10,"source":"custom-monitor",
"conditions":[{"type":"CustomDiskProblem","reason":"DiskIsFine","message":"disk is fine"}],
"rules":[{"type":"permanent","condition":"CustomDiskProblem","reason":"DiskGone","pattern":"disk gone.*"}]}`
	p := dir + "/custom.json"
	if err := os.WriteFile(p, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	def := Log(fstest.MapFS{}, nil, nil)
	s := def.Settings.(*Settings)
	s.RuleFiles = []string{p}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(def.ConditionTypes(), ",")
	for _, want := range []string{"KernelDeadlock", "ReadonlyFilesystem", "CustomDiskProblem"} {
		if !strings.Contains(got, want) {
			t.Errorf("condition types %s lack %s", got, want)
		}
	}
}
