package netcheck

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// TestEvaluatePodCIDRRoute runs every fixture in testdata/podcidr: the
// routes and links a CNI leaves on a node (see each file's note).
func TestEvaluatePodCIDRRoute(t *testing.T) {
	files, _ := filepath.Glob("testdata/podcidr/*.json")
	if len(files) < 10 {
		t.Fatalf("fixtures: %v", files)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".json"), func(t *testing.T) {
			var fx struct {
				Note    string
				PodCIDR string `json:"pod_cidr"`
				Want    string
				Table   RouteTable
			}
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &fx); err != nil {
				t.Fatal(err)
			}
			fs, err := podCIDRRouteRun(context.Background(), fakeNode{cidrs: []string{fx.PodCIDR}}, fakeRoutes{fx.Table})
			if err != nil || len(fs) != 1 {
				t.Fatalf("%v %+v", err, fs)
			}
			f := fs[0]
			if f.Reason != fx.Want {
				t.Fatalf("%s: reason %s (%s), want %s", fx.Note, f.Reason, f.Message, fx.Want)
			}
			wantSev := check.SeverityOK
			if !strings.HasSuffix(fx.Want, "OK") && fx.Want != "PodCIDRUnused" {
				wantSev = check.SeverityProblem
				if !strings.Contains(f.Message, "fix: ") {
					t.Errorf("no fix: %s", f.Message)
				}
			}
			if f.Severity != wantSev || f.Condition != check.ConditionNetworkConfig || f.Details["pod_cidr"] != fx.PodCIDR {
				t.Errorf("finding %+v", f)
			}
			t.Log(f.Message)
		})
	}
}

type fakeNode struct {
	cidrs []string
	node  *corev1.Node
	err   error
}

func (f fakeNode) Node() (*corev1.Node, error) {
	if f.err != nil || f.node != nil {
		return f.node, f.err
	}
	n := &corev1.Node{}
	n.Name = "n1"
	n.Spec.PodCIDRs = f.cidrs
	if len(f.cidrs) > 0 {
		n.Spec.PodCIDR = f.cidrs[0]
	}
	return n, nil
}

func (f fakeNode) NodeName() string { return "n1" }

type fakeRoutes struct{ t RouteTable }

func (f fakeRoutes) RouteTable(_ context.Context, v6 bool) (RouteTable, error) {
	var out RouteTable
	out.Links = f.t.Links
	for _, r := range f.t.Routes {
		if r.Dst.Addr().Is6() == v6 {
			out.Routes = append(out.Routes, r)
		}
	}
	return out, nil
}

func TestPodCIDRRouteNotApplicable(t *testing.T) {
	ctx := context.Background()
	noCIDR := fakeNode{}
	for name, tc := range map[string]struct {
		n    NodeGetter
		want string
	}{
		"no cluster":          {nil, "no cluster access"},
		"API unreachable":     {fakeNode{err: errors.New("connection refused")}, "connection refused"},
		"node not registered": {nilNode{}, "not registered"},
		"no spec.podCIDR":     {noCIDR, "no spec.podCIDR"},
	} {
		_, err := podCIDRRouteRun(ctx, tc.n, fakeRoutes{})
		if why, ok := check.IsNotApplicable(err); !ok || !strings.Contains(why, tc.want) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := podCIDRRouteRun(ctx, fakeNode{cidrs: []string{"10.244.0.0/33"}}, fakeRoutes{}); err == nil || !strings.Contains(err.Error(), "10.244.0.0/33") {
		t.Errorf("bad CIDR: %v", err)
	}
}

type nilNode struct{}

func (nilNode) Node() (*corev1.Node, error) { return nil, nil }
func (nilNode) NodeName() string            { return "n1" }

// TestPodCIDRRouteDualStack: one finding per family, each read once.
func TestPodCIDRRouteDualStack(t *testing.T) {
	var v4, v6 RouteTable
	for _, f := range []struct {
		name string
		into *RouteTable
	}{{"bridge-healthy", &v4}, {"bridge-ipv6-route-deleted", &v6}} {
		var fx struct{ Table RouteTable }
		b, _ := os.ReadFile("testdata/podcidr/" + f.name + ".json")
		if err := json.Unmarshal(b, &fx); err != nil {
			t.Fatal(err)
		}
		*f.into = fx.Table
	}
	both := RouteTable{Routes: append(v4.Routes, v6.Routes...), Links: append(v4.Links, v6.Links...)}
	fs, err := podCIDRRouteRun(context.Background(), fakeNode{cidrs: []string{"10.244.0.0/24", "fd00:10:244::/64"}}, fakeRoutes{both})
	if err != nil || len(fs) != 2 || fs[0].Reason != "PodCIDRRouteOK" || fs[1].Reason != "PodCIDRRouteMissing" {
		t.Fatalf("%v %+v", err, fs)
	}
}

// FuzzEvaluatePodCIDRRoute: any routing table and CIDR gives one finding,
// never a panic (netlink hands over whatever the kernel holds).
func FuzzEvaluatePodCIDRRoute(f *testing.F) {
	files, _ := filepath.Glob("testdata/podcidr/*.json")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fx struct {
			PodCIDR string `json:"pod_cidr"`
			Table   RouteTable
		}
		if json.Unmarshal(b, &fx) != nil {
			return
		}
		p, err := netip.ParsePrefix(fx.PodCIDR)
		if err != nil {
			return
		}
		if got := EvaluatePodCIDRRoute(p.Masked(), fx.Table); got.Reason == "" || got.Message == "" {
			t.Fatalf("empty finding %+v", got)
		}
	})
}
