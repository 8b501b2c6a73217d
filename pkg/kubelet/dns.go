package kubelet

import (
	"context"
	"fmt"
	"io/fs"
	"slices"
	"strings"
)

// DNSSource reads the DNS settings of the kubelet running on the node.
type DNSSource struct {
	// FS is the node's root; Processes nil: ProcFS over FS.
	FS        fs.FS
	Processes Processes
}

// KubeletDNS finds the newest kubelet process and reads its DNS settings
// from its config file and flags; found is false when no kubelet runs.
func (s DNSSource) KubeletDNS(ctx context.Context) (d DNSConfig, found bool, err error) {
	procs := s.Processes
	if procs == nil {
		procs = ProcFS{FS: s.FS}
	}
	ps, err := procs.Kubelets(ctx)
	if err != nil {
		return d, false, err
	}
	if len(ps) == 0 {
		return d, false, nil
	}
	p := slices.MaxFunc(ps, func(a, b Process) int { return a.Started.Compare(b.Started) })
	flags, err := ParseCmdline(p.Args)
	if err != nil {
		return d, true, err
	}
	var file []byte
	if flags.Config != "" {
		if file, err = fs.ReadFile(s.FS, strings.TrimPrefix(flags.Config, "/")); err != nil {
			return d, true, fmt.Errorf("kubelet (pid %d) config file: %w", p.PID, err)
		}
	}
	d, err = ParseDNSConfig(file, flags.Config, flags)
	return d, true, err
}
