package approval

import (
	"errors"
	"testing"

	"github.com/mailauth/caddy-mailauth/store"
)

func newFaultyHarness(t *testing.T) (*harness, *faultyStore) {
	t.Helper()
	var fs *faultyStore
	h := newHarnessOn(t, nil, func(st store.Store) store.Store { fs = newFaultyStore(st); return fs })
	return h, fs
}

func TestLinkCanBeTriedAgainAfterTheStoreFailedToReadItsLogin(t *testing.T) {
	h, fs := newFaultyHarness(t)
	st, token := h.startKnown()
	fs.failNext("Get login/", 1)
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); err == nil || errors.Is(err, ErrLinkInvalid) {
		t.Fatalf("a store failure while confirming = %v; want the store's error, so the page says try again", err)
	}
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); err != nil {
		t.Fatalf("trying again after the store failure = %v; the link must still work", err)
	}
	if w, _ := h.svc.Watch(bg, h.site, st.Pending); w.State != StateApproved {
		t.Fatalf("state %q after the second try, want approved", w.State)
	}
}

func TestLinkCanBeTriedAgainAfterTheStoreFailedToRecordTheDecision(t *testing.T) {
	h, fs := newFaultyHarness(t)
	st, token := h.startKnown()
	fs.failNext("Update login/", 1)
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); err == nil || errors.Is(err, ErrLinkInvalid) {
		t.Fatalf("a store failure while approving = %v; want the store's error", err)
	}
	if w, _ := h.svc.Watch(bg, h.site, st.Pending); w.State != StatePending {
		t.Fatalf("the failed approval changed the login to %q", w.State)
	}
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); err != nil {
		t.Fatalf("trying again after the store failure = %v; the link must still work", err)
	}
	if w, _ := h.svc.Watch(bg, h.site, st.Pending); w.State != StateApproved {
		t.Fatalf("state %q after the second try, want approved", w.State)
	}
}

func TestARestoredLinkCannotDecideTwice(t *testing.T) {
	// The store committed the approval but the answer was lost: the link
	// is given back, and using it again must find the login decided.
	h, fs := newFaultyHarness(t)
	st, token := h.startKnown()
	fs.failNextAfter("Update login/", 1)
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); err == nil {
		t.Fatal("the lost answer should surface as an error")
	}
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); !errors.Is(err, ErrAlreadyDecided) {
		t.Fatalf("the given-back link used again = %v, want ErrAlreadyDecided", err)
	}
	if n := h.countEvent(EventDecisionRefused); n != 1 {
		t.Fatalf("%d refused decisions audited, want the second use", n)
	}
	if c, err := h.svc.Complete(bg, st.Pending, testIP, nil); err != nil || c.Session.User != "alice" {
		t.Fatalf("the approval that was committed stands: %v", err)
	}
}

func TestCodeCanBeTriedAgainAfterTheStoreFailedToRecordTheApproval(t *testing.T) {
	h, fs := newFaultyHarness(t)
	st, _ := h.startKnown()
	code := h.codeOf()
	// Four wrong tries first: the failed fifth must not use up the last.
	h.codeAnswers(st.Pending, maxCodeTries-1)
	fs.failNext("Update login/", 1)
	if err := h.svc.RedeemCode(bg, st.Pending, code, testIP); err == nil || errors.Is(err, ErrWrongCode) || errors.Is(err, ErrCodeLocked) {
		t.Fatalf("a store failure while approving by code = %v; want the store's error", err)
	}
	if err := h.svc.RedeemCode(bg, st.Pending, code, testIP); err != nil {
		t.Fatalf("trying the right code again after the store failure = %v; it must still work", err)
	}
	if w, _ := h.svc.Watch(bg, h.site, st.Pending); w.State != StateApproved {
		t.Fatalf("state %q after the second try, want approved", w.State)
	}
}
