package harness

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Bridge network the harness's containerd gives pods.
const (
	BridgeName  = "cni0"
	networkName = "node-doctor-e2e"
)

// ContainerdOptions configure a standalone containerd.
type ContainerdOptions struct {
	// Dir holds config, root, state, socket and logs. Required.
	Dir string
	// PodCIDR is the host-local IPAM range of the bridge network.
	PodCIDR string
}

// Containerd is a running containerd with the CRI plugin, a bridge CNI
// network and the harness images imported.
type Containerd struct {
	// Address is the socket path (for ctr --address).
	Address string
	// Endpoint is the CRI endpoint, unix://<Address>.
	Endpoint string
	Proc     *Proc
	dir      string
	state    *State // set when started alone
}

func containerdDirs(dir string) (root, state, sock, cniConf string) {
	return filepath.Join(dir, "root"), filepath.Join(dir, "state"),
		filepath.Join(dir, "containerd.sock"), filepath.Join(dir, "net.d")
}

func writeContainerdConfig(dir, podCIDR string) (string, error) {
	root, state, sock, cniConf := containerdDirs(dir)
	for _, d := range []string{root, state, cniConf, filepath.Join(dir, "cni-ipam")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", fmt.Errorf("containerd: %w", err)
		}
	}
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
oom_score = 0

[grpc]
  address = %[3]q

[ttrpc]
  address = "%[3]s.ttrpc"

[debug]
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "%[1]s/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[4]q
  # This kernel refuses negative oom_score_adj; without this every sandbox fails.
  restrict_oom_score_adj = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # Keep runc's state with ours rather than in /run/containerd/runc.
        Root = "%[2]s/runc"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[5]q
    max_conf_num = 1
`, root, state, sock, PauseImage, cniConf)
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return "", fmt.Errorf("containerd: write config: %w", err)
	}
	gw := gatewayIP(podCIDR)
	conflist := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "ranges": [[{"subnet": %q, "gateway": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
`, networkName, BridgeName, filepath.Join(dir, "cni-ipam"), podCIDR, gw)
	if err := os.WriteFile(filepath.Join(cniConf, "10-bridge.conflist"), []byte(conflist), 0o644); err != nil {
		return "", fmt.Errorf("containerd: write cni config: %w", err)
	}
	return path, nil
}

// gatewayIP returns the first address of a /N IPv4 CIDR (x.y.z.1 style).
func gatewayIP(cidr string) string {
	ip := strings.Split(cidr, "/")[0]
	parts := strings.Split(ip, ".")
	if len(parts) != 4 {
		return ""
	}
	parts[3] = "1"
	return strings.Join(parts, ".")
}

// startContainerd starts containerd, waits for CRI RuntimeReady and
// NetworkReady, and imports the default images.
func startContainerd(ctx context.Context, log *slog.Logger, opts ContainerdOptions) (*Containerd, error) {
	if opts.PodCIDR == "" {
		opts.PodCIDR = defaultPodCIDR
	}
	cfg, err := writeContainerdConfig(opts.Dir, opts.PodCIDR)
	if err != nil {
		return nil, err
	}
	_, _, sock, _ := containerdDirs(opts.Dir)
	p, err := startProc(opts.Dir, "containerd", "containerd", []string{"--config", cfg}, nil)
	if err != nil {
		return nil, err
	}
	c := &Containerd{Address: sock, Endpoint: "unix://" + sock, Proc: p, dir: opts.Dir}
	err = waitFor(ctx, p, 60*time.Second, "containerd CRI", func(ctx context.Context) (bool, error) {
		st, err := criStatus(ctx, c.Endpoint)
		if err != nil {
			return false, err
		}
		for _, cond := range st.GetStatus().GetConditions() {
			if !cond.Status {
				return false, fmt.Errorf("%s: %s %s", cond.Type, cond.Reason, cond.Message)
			}
		}
		return true, nil
	})
	if err != nil {
		return c, err
	}
	imgDir := filepath.Join(opts.Dir, "images")
	for _, spec := range DefaultImages() {
		path, err := BuildImage(imgDir, spec)
		if err != nil {
			return c, err
		}
		if err := ImportImage(ctx, sock, path); err != nil {
			return c, err
		}
	}
	log.Info("containerd ready", "endpoint", c.Endpoint)
	return c, nil
}

// DialCRI connects to a CRI endpoint (unix://path).
func DialCRI(ctx context.Context, endpoint string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient("passthrough:///"+strings.TrimPrefix(endpoint, "unix://"),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (netConn, error) {
			return dialUnix(ctx, addr)
		}))
	if err != nil {
		return nil, fmt.Errorf("cri: dial %s: %w", endpoint, err)
	}
	return conn, nil
}

func criStatus(ctx context.Context, endpoint string) (*runtimeapi.StatusResponse, error) {
	conn, err := DialCRI(ctx, endpoint)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st, err := runtimeapi.NewRuntimeServiceClient(conn).Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("cri: status: %w", err)
	}
	return st, nil
}

// removeAllSandboxes stops and removes every pod sandbox so CNI DEL runs
// and the shims and their containers exit before containerd stops.
func removeAllSandboxes(ctx context.Context, endpoint string) error {
	conn, err := DialCRI(ctx, endpoint)
	if err != nil {
		return err
	}
	defer conn.Close()
	rs := runtimeapi.NewRuntimeServiceClient(conn)
	lctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	list, err := rs.ListPodSandbox(lctx, &runtimeapi.ListPodSandboxRequest{})
	cancel()
	if err != nil {
		return fmt.Errorf("cri: list sandboxes: %w", err)
	}
	// A budget per sandbox: a scale test leaves a hundred of them.
	var errs []error
	for _, sb := range list.Items {
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		if _, err := rs.StopPodSandbox(sctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			errs = append(errs, fmt.Errorf("cri: stop sandbox %s: %w", sb.Id, err))
		} else if _, err := rs.RemovePodSandbox(sctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			errs = append(errs, fmt.Errorf("cri: remove sandbox %s: %w", sb.Id, err))
		}
		cancel()
	}
	return joinErrs(errs)
}

// killShims kills containerd-shim processes serving our socket, which
// outlive containerd by design, and returns their pids.
func killShims(address string) []int {
	var killed []int
	for _, name := range dirEntries("/proc") {
		var pid int
		if _, err := fmt.Sscanf(name, "%d", &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", name, "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-address" && (args[i+1] == address || args[i+1] == "unix://"+address) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				killed = append(killed, pid)
				break
			}
		}
	}
	return killed
}
