package cri

import (
	"context"
	"testing"

	"github.com/node-doctor/node-doctor/pkg/check"
)

func TestAttribute(t *testing.T) {
	rt, _, now := brokenNode()
	src := NewSource(rt, SourceOptions{Clock: &fakeClock{now}})
	snap, err := src.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Containers) == 0 {
		t.Fatal("fixture has no containers")
	}
	c := &snap.Containers[0]
	want := ContainerObject(snap.Sandbox(c.GetPodSandboxId()), c)
	ctx := context.Background()

	if o, ok := src.Attribute(ctx, "", c.GetId()); !ok || o != want {
		t.Errorf("by full container ID: %v %v, want %v", o, ok, want)
	}
	if len(c.GetId()) >= 12 {
		if o, ok := src.Attribute(ctx, "", c.GetId()[:12]); !ok || o != want {
			t.Errorf("by 12-character prefix: %v %v", o, ok)
		}
	}
	pod := PodObject(snap.Sandbox(c.GetPodSandboxId()))
	if o, ok := src.Attribute(ctx, pod.UID, "gone-container-id-000"); !ok || o != pod {
		t.Errorf("by pod UID: %v %v, want %v", o, ok, pod)
	}
	if o, ok := src.Attribute(ctx, "no-such-uid", "abc"); ok {
		t.Errorf("unknown IDs attributed to %v", o)
	}
	if _, ok := src.Attribute(ctx, "", "x"); ok {
		t.Error("a short ID prefix must not match")
	}
	var _ interface {
		Attribute(context.Context, string, string) (check.Object, bool)
	} = src
}
