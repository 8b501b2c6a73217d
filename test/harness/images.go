package harness

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Images every harness containerd gets. They are built locally from the
// host's static busybox because no registry is reachable.
const (
	// PauseImage is the sandbox image containerd is configured with.
	PauseImage = "localhost/node-doctor/pause:e2e"
	// BusyboxImage is a small app image: /bin/busybox plus its applets.
	BusyboxImage = "localhost/node-doctor/busybox:e2e"
)

// busyboxPath is the static busybox from Debian's busybox-static package.
const busyboxPath = "/bin/busybox"

// ImageSpec describes an image to build from the host's static busybox.
type ImageSpec struct {
	Ref        string   // full reference, e.g. localhost/node-doctor/busybox:e2e
	Entrypoint []string // may be empty
	Cmd        []string
}

// DefaultImages are the images the harness imports into every containerd.
func DefaultImages() []ImageSpec {
	return []ImageSpec{
		{
			Ref: PauseImage,
			// A sandbox must exit on SIGTERM; sleep as PID 1 would ignore it.
			Entrypoint: []string{"/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"},
		},
		{Ref: BusyboxImage, Cmd: []string{"/bin/sh"}},
	}
}

// BuildImage writes spec as an OCI image layout tarball into dir and returns
// its path. The output is deterministic, so an unchanged busybox gives the
// same digests and containerd's import is a no-op.
func BuildImage(dir string, spec ImageSpec) (string, error) {
	layer, diffID, err := busyboxLayer()
	if err != nil {
		return "", fmt.Errorf("image %s: build layer: %w", spec.Ref, err)
	}
	return writeOCILayout(dir, spec.Ref, map[string]any{
		"Entrypoint": spec.Entrypoint,
		"Cmd":        spec.Cmd,
		"Env":        []string{"PATH=/bin:/usr/bin:/sbin:/usr/sbin"},
		"WorkingDir": "/",
	}, layer, diffID)
}

// ImportImage loads an OCI tarball into containerd's k8s.io namespace, the
// one the CRI plugin serves images from.
func ImportImage(ctx context.Context, address, path string) error {
	cmd := exec.CommandContext(ctx, "ctr", "--address", address, "-n", "k8s.io", "images", "import", path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr import %s: %w: %s", filepath.Base(path), err, bytes.TrimSpace(out))
	}
	return nil
}

var epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func descriptor(mediaType string, data []byte) map[string]any {
	return map[string]any{"mediaType": mediaType, "digest": digest(data), "size": len(data)}
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func blobPath(data []byte) string {
	return "blobs/sha256/" + strings.TrimPrefix(digest(data), "sha256:")
}

// busyboxLayer returns a gzip layer holding /bin/busybox, a symlink per
// applet, and the usual empty directories, plus the digest of its tar.
func busyboxLayer() (layer []byte, diffID string, err error) {
	bin, err := os.ReadFile(busyboxPath)
	if err != nil {
		return nil, "", fmt.Errorf("read %s (package busybox-static): %w", busyboxPath, err)
	}
	out, err := exec.Command(busyboxPath, "--list").Output()
	if err != nil {
		return nil, "", fmt.Errorf("busybox --list: %w", err)
	}
	applets := strings.Fields(string(out))
	sort.Strings(applets)

	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, d := range []string{"bin/", "dev/", "etc/", "proc/", "sys/", "tmp/", "var/", "root/", "usr/", "usr/bin/"} {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: mode, ModTime: epoch}); err != nil {
			return nil, "", err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin)), ModTime: epoch}); err != nil {
		return nil, "", err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, "", err
	}
	for _, a := range applets {
		if a == "busybox" || strings.ContainsAny(a, "/[") {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777, ModTime: epoch}); err != nil {
			return nil, "", err
		}
	}
	for _, f := range []struct{ name, data string }{
		{"etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"},
		{"etc/group", "root:x:0:\nnogroup:x:65534:\n"},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: epoch}); err != nil {
			return nil, "", err
		}
		if _, err := tw.Write([]byte(f.data)); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	return gzipLayer(raw.Bytes())
}

// gzipLayer compresses a layer tarball reproducibly and returns it with its
// diff ID (the digest of the uncompressed tar).
func gzipLayer(raw []byte) (layer []byte, diffID string, err error) {
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if err != nil {
		return nil, "", err
	}
	zw.ModTime = epoch
	if _, err := zw.Write(raw); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return gz.Bytes(), digest(raw), nil
}
