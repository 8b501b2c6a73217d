package dataplane

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// A reader whose leftover child keeps stdout open (a wrapper script that
// does not exec) must still return when the check's context ends.
func TestExecSaverReturnsWhenAChildHoldsStdout(t *testing.T) {
	script := `echo '*nat'; sleep 30; true`
	s := ExecIPTablesSaver{Prefix: []string{"sh", "-c", script, "sh"}}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Save(ctx, BackendNFT, false, "nat", &IPTables{Tables: map[string]*IPTTable{}}) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a reader killed by its deadline must report an error")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Save still blocked 15s after its context ended: the leftover child's stdout held it")
	}
}

// A missing tool is named, with what to do about it, and is still
// exec.ErrNotFound for the callers that treat a missing legacy tool as no
// legacy tables.
func TestExecReaderToolNotOnPath(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	ctx := context.Background()
	err := ExecIPTablesSaver{}.Save(ctx, BackendNFT, false, "nat", &IPTables{Tables: map[string]*IPTTable{}})
	if !errors.Is(err, exec.ErrNotFound) || !strings.Contains(err.Error(), "iptables-nft-save is not on PATH") || !strings.Contains(err.Error(), "netlink, needs no tool") {
		t.Errorf("nft backend: %v", err)
	}
	if _, err := (ExecNFT{}).ListTable(ctx, "ip", "kube-proxy", NewNFTTable()); !errors.Is(err, exec.ErrNotFound) || !strings.Contains(err.Error(), "nft is not on PATH") || !strings.Contains(err.Error(), "dataplane.reader: exec") {
		t.Errorf("nft: %v", err)
	}
	err = ExecIPTablesSaver{Prefix: []string{"iptables-legacy-save-wrapper"}}.Save(ctx, BackendLegacy, false, "nat", &IPTables{Tables: map[string]*IPTTable{}})
	if !errors.Is(err, exec.ErrNotFound) || strings.Contains(err.Error(), "dataplane.reader") {
		t.Errorf("legacy: %v", err)
	}
}
