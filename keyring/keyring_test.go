package keyring

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mailauth/caddy-mailauth/store"
)

func TestCheckpointKeysAreDerivedPerSigningKeyAndSurviveRotation(t *testing.T) {
	oldKey, newKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	before, err := Derive(oldKey)
	if err != nil {
		t.Fatal(err)
	}
	after, err := Derive(newKey, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(before.Checkpoint) != 1 || len(after.Checkpoint) != 2 {
		t.Fatalf("checkpoint keys: %d before and %d after the rotation; want one per signing key", len(before.Checkpoint), len(after.Checkpoint))
	}
	ck := before.Checkpoint[0]
	if bytes.Equal(ck, oldKey) || bytes.Equal(ck, before.Form) || bytes.Equal(ck, before.Outbox[0]) {
		t.Error("the checkpoint key is the signing key or another derived key; want its own (HKDF with its own label)")
	}
	if !bytes.Equal(after.Checkpoint[1], ck) || bytes.Equal(after.Checkpoint[0], ck) {
		t.Error("after a rotation the old key's checkpoint key must still be there to check old checkpoints, and the new one must sign")
	}
}

// Every derived key is its own: none is the signing key or another one.
func TestDerivedKeysAreAllDifferent(t *testing.T) {
	k, err := Derive(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	all := map[string][]byte{"signing": k.Signing[0], "code": k.Code, "form": k.Form, "outbox": k.Outbox[0], "checkpoint": k.Checkpoint[0]}
	for a, ka := range all {
		for b, kb := range all {
			if a < b && bytes.Equal(ka, kb) {
				t.Errorf("the %s key is the %s key", a, b)
			}
		}
	}
	if _, err := Derive(); err == nil {
		t.Error("Derive of no signing key succeeded")
	}
}

func TestParseTakesBothBase64FormsAndNamesABadKey(t *testing.T) {
	std := "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
	url := "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI"
	keys, err := Parse([]string{std, " " + url + " "})
	if err != nil || len(keys) != 2 || keys[0][0] != 1 || keys[1][0] != 2 {
		t.Fatalf("Parse = %v, %v; want two 32-byte keys", keys, err)
	}
	_, err = Parse([]string{std, "c2hvcnQ="})
	if err == nil || !strings.Contains(err.Error(), "key 2 is not 32 bytes of base64") || !strings.Contains(err.Error(), "head -c 32 /dev/urandom | base64") {
		t.Fatalf("Parse of a short second key = %v; want an error naming key 2 and how to make one", err)
	}
}

func TestLoadOrCreateMakesOneKeyAndThenKeepsReturningIt(t *testing.T) {
	kv := openStore(t)
	first, err := LoadOrCreate(t.Context(), kv)
	if err != nil || len(first) != 32 {
		t.Fatalf("LoadOrCreate = %x, %v", first, err)
	}
	again, err := LoadOrCreate(t.Context(), kv)
	if err != nil || !bytes.Equal(first, again) {
		t.Fatalf("second LoadOrCreate = %x, %v; want the kept key %x", again, err, first)
	}
}

// A store that lost the key (a Redis restarted empty) gets this
// instance's back, and a key an operator replaced is reported, not
// overwritten.
func TestKeepWritesALostKeyBackAndReportsAReplacedOne(t *testing.T) {
	kv := openStore(t)
	key, err := LoadOrCreate(t.Context(), kv)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		Keep(ctx, kv, key, 10*time.Millisecond, zap.New(core))
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })

	if err := kv.Delete(t.Context(), StoredKeyName); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		cur, err := kv.Get(t.Context(), StoredKeyName)
		return err == nil && bytes.Equal(cur, key)
	}, "the lost key written back")
	if logs.FilterMessageSnippet("missing from the store").Len() == 0 {
		t.Error("writing the key back was not logged")
	}

	other := bytes.Repeat([]byte{9}, 32)
	if err := kv.Put(t.Context(), StoredKeyName, other, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return logs.FilterMessageSnippet("different session key").Len() > 0 }, "the replaced key reported")
	if cur, _ := kv.Get(t.Context(), StoredKeyName); !bytes.Equal(cur, other) {
		t.Errorf("Keep overwrote the operator's key with its own")
	}
}

func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := store.OpenBadger(store.BadgerOptions{InMemory: true}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func waitFor(t *testing.T, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 5s for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
