package stores

import (
	"context"
	"testing"
)

// A reload provisions the new config before it cleans up the old one:
// both configs' modules must get the one open database, and it must stay
// open until the last of them lets go.
func TestBadgerIsSharedAcrossAReloadAndClosedByTheLastUser(t *testing.T) {
	dir := t.TempDir()
	old, next := &Badger{Path: dir}, &Badger{Path: dir}
	s1, err := old.Open(nil)
	if err != nil {
		t.Fatalf("opening the store: %v", err)
	}
	s2, err := next.Open(nil)
	if err != nil {
		t.Fatalf("the reloaded config could not open the store the old one holds: %v", err)
	}
	if s1 != s2 {
		t.Fatal("the reloaded config got a store of its own, not the shared one")
	}
	if err := old.Cleanup(); err != nil {
		t.Fatalf("cleaning up the old config: %v", err)
	}
	ctx := context.Background()
	if err := s2.Put(ctx, "k", []byte("v"), 0); err != nil {
		t.Fatalf("the store closed with the old config while the new one uses it: %v", err)
	}
	if err := next.Cleanup(); err != nil {
		t.Fatalf("cleaning up the new config: %v", err)
	}
	if err := s2.Put(ctx, "k", []byte("v"), 0); err == nil {
		t.Error("the store is still open after the last config let go of it")
	}
	if err := next.Cleanup(); err != nil {
		t.Errorf("a second Cleanup, as after a failed Provision: %v", err)
	}
}
