package caddymodule

import (
	"bytes"
	"testing"
)

func TestCheckpointKeysAreDerivedPerSigningKeyAndSurviveRotation(t *testing.T) {
	oldKey, newKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	var before, after App
	if _, err := before.deriveKeys(oldKey); err != nil {
		t.Fatal(err)
	}
	if _, err := after.deriveKeys(newKey, oldKey); err != nil {
		t.Fatal(err)
	}
	if len(before.checkpointKeys) != 1 || len(after.checkpointKeys) != 2 {
		t.Fatalf("checkpoint keys: %d before and %d after the rotation; want one per signing key", len(before.checkpointKeys), len(after.checkpointKeys))
	}
	ck := before.checkpointKeys[0]
	if bytes.Equal(ck, oldKey) || bytes.Equal(ck, before.csrfKey) || bytes.Equal(ck, before.outboxKeys[0]) {
		t.Error("the checkpoint key is the signing key or another derived key; want its own (HKDF with its own label)")
	}
	if !bytes.Equal(after.checkpointKeys[1], ck) || bytes.Equal(after.checkpointKeys[0], ck) {
		t.Error("after a rotation the old key's checkpoint key must still be there to check old checkpoints, and the new one must sign")
	}
}
