//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/node-doctor/node-doctor/test/harness"
)

// TestKernelOOMAttributedToPod: a pod with a small memory limit allocates
// past it on the real node; the kernel logs the OOM kill in /dev/kmsg; the
// kernel-log check names that pod and container, found through CRI.
func TestKernelOOMAttributedToPod(t *testing.T) {
	harness.RequireRoot(t)
	bin := buildAgent(t)
	c := harness.StartT(t, harness.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ns, err := c.CreateNamespace(ctx, "oom")
	if err != nil {
		t.Fatal(err)
	}
	spec := c.PodSpec(harness.PodOptions{Namespace: ns, Name: "hog", Command: []string{"dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"}})
	q := *resource.NewQuantity(16<<20, resource.BinarySI)
	spec.Spec.Containers[0].Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: q}, Requests: corev1.ResourceList{corev1.ResourceMemory: q}}
	pod, err := c.Client.CoreV1().Pods(ns).Create(ctx, spec, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctr := spec.Spec.Containers[0].Name
	if _, err := c.WaitForPod(ctx, ns, "hog", 2*time.Minute, harness.ContainerRestarted(1)); err != nil {
		t.Fatal(err)
	}

	var rep struct {
		Results []struct {
			Check, Status, Error string
			Findings             []struct {
				Reason  string
				Message string
				Object  struct{ Kind, Namespace, Name, UID, Container string }
				Details map[string]string
			}
		}
	}
	cmd := exec.CommandContext(ctx, bin, "check", "-o", "json", "--only", "kernel-log", "--runtime-endpoint", c.CRIEndpoint)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	_ = cmd.Run() // exit 1 is expected: warnings and problems
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || len(rep.Results) != 1 {
		t.Fatalf("check -o json: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	for _, f := range rep.Results[0].Findings {
		if f.Reason != "OOMKilling" || f.Object.Kind != "Pod" {
			continue
		}
		if f.Object.Namespace == ns && f.Object.Name == "hog" && f.Object.UID == string(pod.UID) && f.Object.Container == ctr {
			t.Logf("attributed: %s (%v)", f.Message, f.Details)
			return
		}
	}
	t.Fatalf("no OOMKilling finding on pod %s/hog container %s (uid %s):\n%s", ns, ctr, pod.UID, out.String())
}
