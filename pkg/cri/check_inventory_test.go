package cri

import (
	"strings"
	"testing"

	"github.com/node-doctor/node-doctor/pkg/check"
)

func TestInventoryListsEveryPodAndContainer(t *testing.T) {
	rt, _, now := brokenNode()
	s := mustSnapshot(t, rt, now)
	got := inventoryFindings(s)
	if len(got) != len(s.Sandboxes)+len(s.Containers) {
		t.Fatalf("%d findings for %d sandboxes and %d containers", len(got), len(s.Sandboxes), len(s.Containers))
	}
	exited := false
	for _, f := range got {
		if f.Severity != check.SeverityOK || f.Object.IsNode() || f.Condition != "" {
			t.Errorf("inventory finding must be healthy, about a pod, and drive no condition: %+v", f)
		}
		if f.Reason == "Container" && strings.Contains(f.Message, "exited") && strings.Contains(f.Message, "exit code") {
			exited = true
		}
	}
	if !exited {
		t.Errorf("no exited container with its exit code listed: %v", reasons(got))
	}
}
