package dataplane

import (
	"context"
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
