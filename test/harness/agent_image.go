package harness

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// AgentImage is the reference the e2e tests give the locally built agent
// image; DaemonSets use it with imagePullPolicy IfNotPresent or Never.
const AgentImage = "localhost/node-doctor/node-doctor:e2e"

// AgentImageSpec describes the node-doctor image to assemble without a
// registry: what the Dockerfile builds, from this machine's files.
type AgentImageSpec struct {
	Ref string // default AgentImage
	// Binary is a static node-doctor (CGO_ENABLED=0), put at
	// /usr/local/bin/node-doctor.
	Binary string
	// RootfsScript is deploy/image/rootfs.sh, the script the Dockerfile runs:
	// it copies iptables-legacy-save, ip6tables-legacy-save and their
	// extensions and libraries (ldd) from this machine into the image's root.
	RootfsScript string
}

// BuildAgentImage writes the agent image as an OCI layout tarball into dir
// and returns its path; import it with ImportImage. Entrypoint and Cmd are
// the Dockerfile's.
func BuildAgentImage(ctx context.Context, dir string, spec AgentImageSpec) (string, error) {
	if spec.Ref == "" {
		spec.Ref = AgentImage
	}
	root, err := os.MkdirTemp("", "nd-agent-rootfs-")
	if err != nil {
		return "", fmt.Errorf("image %s: %w", spec.Ref, err)
	}
	defer os.RemoveAll(root)
	if out, err := exec.CommandContext(ctx, "sh", spec.RootfsScript, root).CombinedOutput(); err != nil {
		return "", fmt.Errorf("image %s: %s: %w: %s", spec.Ref, spec.RootfsScript, err, bytes.TrimSpace(out))
	}
	bin, err := os.ReadFile(spec.Binary)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", spec.Ref, err)
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/local/bin"), 0o755); err != nil {
		return "", fmt.Errorf("image %s: %w", spec.Ref, err)
	}
	if err := os.WriteFile(filepath.Join(root, "usr/local/bin/node-doctor"), bin, 0o755); err != nil {
		return "", fmt.Errorf("image %s: %w", spec.Ref, err)
	}
	layer, diffID, err := dirLayer(root)
	if err != nil {
		return "", fmt.Errorf("image %s: layer: %w", spec.Ref, err)
	}
	imgConfig := map[string]any{
		"Entrypoint": []string{"/usr/local/bin/node-doctor"},
		"Cmd":        []string{"run", "--host-root=/host"},
		"Env":        []string{"PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		"User":       "0:0",
		"WorkingDir": "/",
	}
	return writeOCILayout(dir, spec.Ref, imgConfig, layer, diffID)
}

// dirLayer packs the tree at root into a gzip tar layer owned by root, with
// fixed times and sorted names, and returns it with the digest of its tar.
func dirLayer(root string) (layer []byte, diffID string, err error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: rel, Mode: int64(info.Mode().Perm()), ModTime: epoch}
		if info.Mode()&fs.ModeSticky != 0 {
			hdr.Mode |= 0o1000
		}
		switch {
		case d.IsDir():
			hdr.Typeflag, hdr.Name = tar.TypeDir, rel+"/"
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, target, 0o777
		case info.Mode().IsRegular():
			hdr.Typeflag, hdr.Size = tar.TypeReg, info.Size()
		default:
			return fmt.Errorf("%s: unsupported file type %s", rel, info.Mode().Type())
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if _, err := tw.Write(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	return gzipLayer(raw.Bytes())
}

// writeOCILayout writes a one-layer image as an OCI layout tarball named
// after ref into dir.
func writeOCILayout(dir, ref string, imgConfig map[string]any, layer []byte, diffID string) (string, error) {
	configJSON, err := json.Marshal(map[string]any{
		"architecture": goarch(),
		"os":           "linux",
		"created":      "2000-01-01T00:00:00Z",
		"config":       imgConfig,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{diffID}},
	})
	if err != nil {
		return "", fmt.Errorf("image %s: encode config: %w", ref, err)
	}
	manifestJSON, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor("application/vnd.oci.image.config.v1+json", configJSON),
		"layers":        []any{descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer)},
	})
	if err != nil {
		return "", fmt.Errorf("image %s: encode manifest: %w", ref, err)
	}
	md := descriptor("application/vnd.oci.image.manifest.v1+json", manifestJSON)
	md["annotations"] = map[string]string{
		"io.containerd.image.name":          ref,
		"org.opencontainers.image.ref.name": ref[strings.LastIndex(ref, ":")+1:],
	}
	md["platform"] = map[string]string{"architecture": goarch(), "os": "linux"}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []any{md},
	})
	if err != nil {
		return "", fmt.Errorf("image %s: encode index: %w", ref, err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch}); err != nil {
			return "", fmt.Errorf("image %s: write tar: %w", ref, err)
		}
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{blobPath(configJSON), configJSON},
		{blobPath(layer), layer},
		{blobPath(manifestJSON), manifestJSON},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: epoch}); err != nil {
			return "", fmt.Errorf("image %s: write tar: %w", ref, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return "", fmt.Errorf("image %s: write tar: %w", ref, err)
		}
	}
	if err := tw.Close(); err != nil {
		return "", fmt.Errorf("image %s: write tar: %w", ref, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("image %s: %w", ref, err)
	}
	path := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(ref)+".oci.tar")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("image %s: %w", ref, err)
	}
	return path, nil
}
