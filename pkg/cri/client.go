package cri

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"path"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RuntimeService is the read-only part of the CRI runtime service that
// node-doctor uses; k8s.io/cri-api's RuntimeService and its fake satisfy it.
type RuntimeService interface {
	Version(ctx context.Context, apiVersion string) (*runtimeapi.VersionResponse, error)
	Status(ctx context.Context, verbose bool) (*runtimeapi.StatusResponse, error)
	ListPodSandbox(ctx context.Context, filter *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error)
	ListContainers(ctx context.Context, filter *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error)
	ContainerStatus(ctx context.Context, containerID string, verbose bool) (*runtimeapi.ContainerStatusResponse, error)
}

// ImageService is the read-only part of the CRI image service.
type ImageService interface {
	ListImages(ctx context.Context, filter *runtimeapi.ImageFilter) ([]*runtimeapi.Image, error)
	ImageStatus(ctx context.Context, image *runtimeapi.ImageSpec, verbose bool) (*runtimeapi.ImageStatusResponse, error)
	ImageFsInfo(ctx context.Context) (*runtimeapi.ImageFsInfoResponse, error)
}

// Runtime is what a Source reads snapshots from.
type Runtime interface {
	RuntimeService
	ImageService
}

// Client defaults.
const (
	// DefaultCallTimeout bounds each CRI call when the crictl config sets no
	// timeout. crictl uses 2s; a busy runtime listing hundreds of containers
	// needs a little more, and a hung one is still caught.
	DefaultCallTimeout = 5 * time.Second
	// MaxMessageSize is kubelet's limit for CRI messages: big nodes have big
	// container lists.
	MaxMessageSize = 16 << 20
	apiVersion     = "v1"
)

// Dialer connects to a unix socket given by its path relative to the host
// root.
type Dialer func(ctx context.Context, hostPath string) (net.Conn, error)

// UnixDialer dials sockets under root ("/" on the host, "/host" in a pod).
func UnixDialer(root string) Dialer {
	return func(ctx context.Context, p string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path.Join(root, p))
	}
}

// CallObserver is told about every CRI call, for metrics.
type CallObserver func(method string, d time.Duration, err error)

// ClientOptions configure a Client.
type ClientOptions struct {
	Endpoints EndpointOptions
	Dial      Dialer
	// Timeout overrides the per-call timeout of the crictl config and the
	// default.
	Timeout  time.Duration
	Observer CallObserver
	Log      *slog.Logger
}

// NoRuntimeError says no endpoint was configured and none of the default
// sockets exists: this machine is not running a CRI runtime.
type NoRuntimeError struct{ Tried []string }

func (e *NoRuntimeError) Error() string {
	return "cri: no container runtime found: none of the sockets " + strings.Join(e.Tried, ", ") +
		" exists (set --runtime-endpoint, $" + EnvRuntimeEndpoint + " or runtime-endpoint in " + DefaultCrictlConfig + ")"
}

// Client is a CRI client over a unix socket. It resolves its endpoint like
// crictl on first use, bounds every call with a timeout, and after a call
// finds the runtime unavailable (e.g. restarted) it drops the connection so
// the next call resolves and connects afresh.
type Client struct {
	opts ClientOptions
	log  *slog.Logger

	mu sync.Mutex
	cn *conn
}

type conn struct {
	endpoint, imageEndpoint string
	timeout                 time.Duration
	rconn, iconn            *grpc.ClientConn
	rs                      runtimeapi.RuntimeServiceClient
	is                      runtimeapi.ImageServiceClient
}

func (cn *conn) close() {
	_ = cn.rconn.Close()
	if cn.iconn != cn.rconn {
		_ = cn.iconn.Close()
	}
}

// NewClient returns a client; it connects lazily.
func NewClient(o ClientOptions) *Client {
	if o.Dial == nil {
		o.Dial = UnixDialer("/")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{opts: o, log: log}
}

// Endpoint returns the runtime endpoint in use, or "" before the first
// successful resolution.
func (c *Client) Endpoint() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cn == nil {
		return ""
	}
	return c.cn.endpoint
}

// Close drops the connection; the client can still be used afterwards.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cn != nil {
		c.cn.close()
		c.cn = nil
	}
}

func (c *Client) get(ctx context.Context) (*conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cn != nil {
		return c.cn, nil
	}
	cn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	c.cn = cn
	return cn, nil
}

// drop forgets cn if it is still current.
func (c *Client) drop(cn *conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cn == cn {
		c.cn = nil
		cn.close()
	}
}

func (c *Client) connect(ctx context.Context) (*conn, error) {
	eps, err := ResolveEndpoints(c.opts.Endpoints)
	if err != nil {
		return nil, err
	}
	timeout := DefaultCallTimeout
	if eps.Timeout > 0 {
		timeout = eps.Timeout
	}
	if c.opts.Timeout > 0 {
		timeout = c.opts.Timeout
	}
	// Like crictl, take the first default socket that exists and answers.
	var existing []string
	for _, ep := range eps.Runtime {
		if c.socketExists(ep) {
			existing = append(existing, ep)
		}
	}
	if len(existing) == 0 {
		if !eps.Explicit {
			return nil, &NoRuntimeError{Tried: eps.Runtime}
		}
		return nil, fmt.Errorf("cri: connect to %s (from %s): no socket there: %w", eps.Runtime[0], eps.Source, fs.ErrNotExist)
	}
	chosen := existing[0]
	if len(existing) > 1 {
		for _, ep := range existing {
			cc, err := c.dial(ep)
			if err != nil {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, timeout)
			_, err = runtimeapi.NewRuntimeServiceClient(cc).Version(pctx, &runtimeapi.VersionRequest{Version: apiVersion})
			cancel()
			_ = cc.Close()
			if err == nil {
				chosen = ep
				break
			}
			c.log.Debug("cri endpoint does not answer", "endpoint", ep, "err", err)
		}
	}
	cn := &conn{endpoint: chosen, imageEndpoint: chosen, timeout: timeout}
	if cn.rconn, err = c.dial(chosen); err != nil {
		return nil, err
	}
	cn.iconn = cn.rconn
	if eps.Image != "" && eps.Image != chosen {
		cn.imageEndpoint = eps.Image
		if cn.iconn, err = c.dial(eps.Image); err != nil {
			_ = cn.rconn.Close()
			return nil, err
		}
	}
	cn.rs = runtimeapi.NewRuntimeServiceClient(cn.rconn)
	cn.is = runtimeapi.NewImageServiceClient(cn.iconn)
	c.log.Debug("cri endpoint chosen", "endpoint", chosen, "image_endpoint", cn.imageEndpoint, "source", eps.Source, "timeout", timeout)
	return cn, nil
}

func (c *Client) socketExists(ep string) bool {
	p, err := SocketPath(ep)
	if err != nil || c.opts.Endpoints.HostFS == nil {
		return false
	}
	fi, err := fs.Stat(c.opts.Endpoints.HostFS, p)
	if err != nil {
		// An fs.FS without Stat opens the path, and opening a socket fails
		// (ENXIO): only "does not exist" means there is nothing to dial.
		return !errors.Is(err, fs.ErrNotExist)
	}
	return fi.Mode()&fs.ModeSocket != 0
}

func (c *Client) dial(ep string) (*grpc.ClientConn, error) {
	p, err := SocketPath(ep)
	if err != nil {
		return nil, fmt.Errorf("cri: %w", err)
	}
	dial := c.opts.Dial
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority("localhost"),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dial(ctx, addr) }),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)),
		// A restarted runtime should be found within a second or two, not
		// after grpc's default two-minute backoff.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
	}
	if obs := c.opts.Observer; obs != nil {
		opts = append(opts, grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, o ...grpc.CallOption) error {
			start := time.Now()
			err := invoker(ctx, method, req, reply, cc, o...)
			obs(method[strings.LastIndexByte(method, '/')+1:], time.Since(start), err)
			return err
		}))
	}
	cc, err := grpc.NewClient("passthrough:///"+p, opts...)
	if err != nil {
		return nil, fmt.Errorf("cri: dial %s: %w", ep, err)
	}
	return cc, nil
}

// call runs f with the per-call timeout and wraps its error with what failed.
func (c *Client) call(ctx context.Context, what string, f func(ctx context.Context, cn *conn) error) error {
	cn, err := c.get(ctx)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, cn.timeout)
	defer cancel()
	err = f(cctx, cn)
	if err == nil {
		return nil
	}
	if status.Code(err) == codes.Unavailable {
		c.drop(cn)
	}
	if (errors.Is(cctx.Err(), context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded) && ctx.Err() == nil {
		return fmt.Errorf("cri: %s at %s: no answer within %s: %w", what, cn.endpoint, cn.timeout, err)
	}
	return fmt.Errorf("cri: %s at %s: %w", what, cn.endpoint, err)
}

// Version returns the runtime's name and version.
func (c *Client) Version(ctx context.Context, v string) (*runtimeapi.VersionResponse, error) {
	var r *runtimeapi.VersionResponse
	err := c.call(ctx, "version", func(ctx context.Context, cn *conn) (err error) {
		r, err = cn.rs.Version(ctx, &runtimeapi.VersionRequest{Version: v})
		return err
	})
	return r, err
}

// Status returns the runtime conditions and, when verbose, its info map.
func (c *Client) Status(ctx context.Context, verbose bool) (*runtimeapi.StatusResponse, error) {
	var r *runtimeapi.StatusResponse
	err := c.call(ctx, "status", func(ctx context.Context, cn *conn) (err error) {
		r, err = cn.rs.Status(ctx, &runtimeapi.StatusRequest{Verbose: verbose})
		return err
	})
	return r, err
}

// ListPodSandbox lists pod sandboxes.
func (c *Client) ListPodSandbox(ctx context.Context, f *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error) {
	var r *runtimeapi.ListPodSandboxResponse
	err := c.call(ctx, "list pod sandboxes", func(ctx context.Context, cn *conn) (err error) {
		r, err = cn.rs.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: f})
		return err
	})
	return r.GetItems(), err
}

// ListContainers lists containers.
func (c *Client) ListContainers(ctx context.Context, f *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error) {
	var r *runtimeapi.ListContainersResponse
	err := c.call(ctx, "list containers", func(ctx context.Context, cn *conn) (err error) {
		r, err = cn.rs.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: f})
		return err
	})
	return r.GetContainers(), err
}

// ContainerStatus returns one container's status.
func (c *Client) ContainerStatus(ctx context.Context, id string, verbose bool) (*runtimeapi.ContainerStatusResponse, error) {
	var r *runtimeapi.ContainerStatusResponse
	err := c.call(ctx, "container status of "+shortID(id), func(ctx context.Context, cn *conn) (err error) {
		r, err = cn.rs.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: verbose})
		return err
	})
	return r, err
}

// PodSandboxStatus returns one sandbox's status (its IP) and, when verbose,
// the runtime's info map (containerd: the sandbox config with its DNS).
func (c *Client) PodSandboxStatus(ctx context.Context, id string, verbose bool) (*runtimeapi.PodSandboxStatusResponse, error) {
	var r *runtimeapi.PodSandboxStatusResponse
	err := c.call(ctx, "pod sandbox status of "+shortID(id), func(ctx context.Context, cn *conn) (err error) {
		r, err = cn.rs.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: verbose})
		return err
	})
	return r, err
}

// ListImages lists images.
func (c *Client) ListImages(ctx context.Context, f *runtimeapi.ImageFilter) ([]*runtimeapi.Image, error) {
	var r *runtimeapi.ListImagesResponse
	err := c.call(ctx, "list images", func(ctx context.Context, cn *conn) (err error) {
		r, err = cn.is.ListImages(ctx, &runtimeapi.ListImagesRequest{Filter: f})
		return err
	})
	return r.GetImages(), err
}

// ImageStatus returns one image's status; its Image is nil when the image
// is not present.
func (c *Client) ImageStatus(ctx context.Context, img *runtimeapi.ImageSpec, verbose bool) (*runtimeapi.ImageStatusResponse, error) {
	var r *runtimeapi.ImageStatusResponse
	err := c.call(ctx, "image status of "+img.GetImage(), func(ctx context.Context, cn *conn) (err error) {
		r, err = cn.is.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: img, Verbose: verbose})
		return err
	})
	return r, err
}

// ImageFsInfo returns the usage of the image and container filesystems.
func (c *Client) ImageFsInfo(ctx context.Context) (*runtimeapi.ImageFsInfoResponse, error) {
	var r *runtimeapi.ImageFsInfoResponse
	err := c.call(ctx, "image filesystem info", func(ctx context.Context, cn *conn) (err error) {
		r, err = cn.is.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
		return err
	})
	return r, err
}

func shortID(id string) string {
	if len(id) > 13 {
		return id[:13]
	}
	return id
}
