package mailer

import (
	"bytes"
	"strings"
	"testing"
)

func TestSealedOutboxKeepsNoLinkAtRestAndStillDelivers(t *testing.T) {
	h := newHarness(t, &fakeSender{})
	key := bytes.Repeat([]byte{7}, SealKeySize)
	if err := h.o.SealWith(key); err != nil {
		t.Fatal(err)
	}
	h.enqueue(t, h.message("m1"))
	it, ok := h.q.item("m1")
	if !ok {
		t.Fatal("message not queued")
	}
	if bytes.Contains(it.Payload, []byte(secretLink)) || bytes.Contains(it.Payload, []byte("alice@example.com")) {
		t.Fatal("the queued payload shows the link or the recipient in the clear")
	}
	run(t, h.o)
	expectKind(t, h.ev.next(t), EventSent, 1)
	if calls := h.sender.calls(); len(calls) != 1 || !strings.Contains(calls[0].Text, secretLink) {
		t.Fatalf("the sender should get the message as queued: %+v", calls)
	}
}

func TestMailSealedBeforeAKeyRotationStillOpens(t *testing.T) {
	h := newHarness(t, &fakeSender{})
	oldKey, newKey := bytes.Repeat([]byte{1}, SealKeySize), bytes.Repeat([]byte{2}, SealKeySize)
	if err := h.o.SealWith(oldKey); err != nil {
		t.Fatal(err)
	}
	h.enqueue(t, h.message("before"))
	if err := h.o.SealWith(newKey, oldKey); err != nil {
		t.Fatal(err)
	}
	run(t, h.o)
	expectKind(t, h.ev.next(t), EventSent, 1)
}

func TestSealWithRefusesShortKeys(t *testing.T) {
	h := newHarness(t, &fakeSender{})
	if err := h.o.SealWith([]byte("short")); err == nil {
		t.Fatal("a 5-byte key was accepted")
	}
}
