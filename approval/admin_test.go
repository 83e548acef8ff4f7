package approval

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestListLoginsShowsPendingOnly(t *testing.T) {
	h := newHarness(t)
	waiting, _ := h.startKnown()
	h.clock.Advance(time.Second)
	done, token := h.startKnown()
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Minute)
	got, err := h.svc.ListLogins(bg, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Reference != waiting.Reference || got[0].User != "alice" || got[0].State != StatePending || got[0].Site != testApp || got[0].Age != 61 {
		t.Fatalf("ListLogins = %+v; want only %s, pending, 61 s old", got, waiting.Reference)
	}
	all, err := h.svc.ListLogins(bg, true)
	if err != nil || len(all) != 2 || all[1].Reference != done.Reference || all[1].State != StateApproved || all[1].Decider != aliceEmail {
		t.Fatalf("ListLogins(all) = %+v, %v; want both, the second approved by alice", all, err)
	}
}

func TestDenyLoginByReference(t *testing.T) {
	h := newHarness(t)
	st, token := h.startKnown()
	info, err := h.svc.DenyLogin(bg, " "+st.Reference+" ", "ops@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if info.State != StateDenied || info.Decider != "operator ops@example.com" {
		t.Errorf("DenyLogin = %+v; want denied by the operator", info)
	}
	if v, err := h.svc.Watch(bg, h.site, st.Pending); err != nil || v.State != StateDenied {
		t.Errorf("the waiting browser sees %+v, %v; want denied", v, err)
	}
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); !errors.Is(err, ErrAlreadyDecided) {
		t.Errorf("the link after an operator's deny: %v; want ErrAlreadyDecided", err)
	}
	if _, err := h.svc.DenyLogin(bg, st.Reference, ""); !errors.Is(err, ErrAlreadyDecided) {
		t.Errorf("second deny = %v; want ErrAlreadyDecided", err)
	}
	if _, err := h.svc.DenyLogin(bg, "NOT-THERE", ""); !errors.Is(err, ErrLoginNotFound) {
		t.Errorf("deny of an unknown reference = %v; want ErrLoginNotFound", err)
	}
	if h.countEvent(EventDenied) != 1 {
		t.Errorf("denied audited %d times; want 1", h.countEvent(EventDenied))
	}
}

func TestListAndRevokeSessions(t *testing.T) {
	h := newHarness(t)
	first := h.signIn()
	h.clock.Advance(time.Second)
	second := h.signIn()
	got, err := h.svc.ListSessions(bg, "alice")
	if err != nil || len(got) != 2 {
		t.Fatalf("ListSessions = %+v, %v; want 2", got, err)
	}
	if none, _ := h.svc.ListSessions(bg, "carol"); len(none) != 0 {
		t.Errorf("carol has sessions %+v", none)
	}
	if got[0].Site != testApp || got[0].ClientIP != testIP || !got[0].ExpiresAt.Equal(got[0].IssuedAt.Add(testLifetime)) {
		t.Errorf("session info %+v lacks its site, address or expiry", got[0])
	}
	if _, err := h.svc.RevokeSessionID(bg, "xyz", "ops"); !errors.Is(err, ErrBadSessionID) {
		t.Errorf("RevokeSessionID(xyz) = %v; want ErrBadSessionID", err)
	}
	if _, err := h.svc.RevokeSessionID(bg, "00000000000000000000000000000000", "ops"); !errors.Is(err, ErrSessionNotFound) {
		t.Errorf("RevokeSessionID(unknown) = %v; want ErrSessionNotFound", err)
	}
	if _, err := h.svc.RevokeSessionID(bg, got[0].ID, "ops"); err != nil {
		t.Fatal(err)
	}
	var s Session
	if err := h.svc.VerifySession(first.Cookie, &s); !errors.Is(err, ErrSessionRevoked) {
		t.Errorf("the revoked session verifies: %v", err)
	}
	if err := h.svc.VerifySession(second.Cookie, &s); err != nil {
		t.Errorf("the other session stopped working: %v", err)
	}
	if left, _ := h.svc.ListSessions(bg, ""); len(left) != 1 || left[0].ID != got[1].ID {
		t.Errorf("after revoking one: %+v; want only the second", left)
	}
	if _, err := h.svc.RevokeSessionID(bg, got[0].ID, "ops"); !errors.Is(err, ErrSessionNotFound) {
		t.Errorf("revoking twice = %v; want ErrSessionNotFound", err)
	}
}

func TestQueryAuditFilters(t *testing.T) {
	h := newHarness(t)
	h.signIn()
	h.clock.Advance(time.Hour)
	mid := h.clock.Now()
	h.start("mallory")
	st, _ := h.startKnown()
	if _, err := h.svc.DenyLogin(bg, st.Reference, "ops"); err != nil {
		t.Fatal(err)
	}
	all, err := h.svc.QueryAudit(bg, AuditQuery{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var evs []Event
	for _, r := range all.Records {
		evs = append(evs, r.Event)
	}
	want := []Event{EventLoginStarted, EventMailQueued, EventApproved, EventSessionIssued, EventLoginStarted, EventUserUnknown, EventLoginStarted, EventMailQueued, EventDenied}
	if fmt.Sprint(evs) != fmt.Sprint(want) || all.Next != 0 {
		t.Fatalf("stored events %v, next %d; want %v and no next page", evs, all.Next, want)
	}
	for i, r := range all.Records {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d", i, r.Seq)
		}
	}
	since, err := h.svc.QueryAudit(bg, AuditQuery{Since: mid, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range since.Records {
		if r.Time.Before(mid) {
			t.Errorf("record %d at %v is before since %v", r.Seq, r.Time, mid)
		}
	}
	if len(since.Records) == 0 || since.Records[0].Seq == 1 || since.Records[0].Time.Before(mid) {
		t.Errorf("since did not skip the first sign-in: first record %+v", since.Records)
	}
	denied, _ := h.svc.QueryAudit(bg, AuditQuery{Event: EventDenied, Limit: 10})
	if len(denied.Records) != 1 || denied.Records[0].Reference != st.Reference || denied.Records[0].Fields["decider"] != "operator ops" {
		t.Errorf("event=denied: %+v; want the operator's deny", denied.Records)
	}
	mallory, _ := h.svc.QueryAudit(bg, AuditQuery{User: "mallory", Limit: 10})
	if len(mallory.Records) == 0 {
		t.Error("user=mallory found nothing")
	}
	for _, r := range mallory.Records {
		if r.User != "mallory" {
			t.Errorf("user=mallory returned a record of %q", r.User)
		}
	}
	page, _ := h.svc.QueryAudit(bg, AuditQuery{Limit: 3})
	if len(page.Records) != 3 || page.Next != 3 {
		t.Fatalf("limit 3: %d records, next %d", len(page.Records), page.Next)
	}
	next, _ := h.svc.QueryAudit(bg, AuditQuery{After: page.Next, Limit: 3})
	if len(next.Records) != 3 || next.Records[0].Seq != 4 {
		t.Errorf("the page after 3 starts at %+v; want 4", next.Records)
	}
	if _, err := h.svc.QueryAudit(bg, AuditQuery{Limit: 0}); err == nil {
		t.Error("limit 0 accepted")
	}
	rep, err := VerifyAuditChain(bg, h.store, 0, h.clock.Now())
	if err != nil || len(rep.Problems) != 0 {
		t.Errorf("the harness's chain: %+v, %v", rep, err)
	}
}

func TestWatchChangeWakesOnDecision(t *testing.T) {
	h := newHarness(t)
	st, token := h.startKnown()
	got := make(chan *LoginView, 1)
	go func() {
		v, err := h.svc.WatchChange(bg, h.site, st.Pending, StatePending)
		if err != nil {
			t.Error(err)
		}
		got <- v
	}()
	time.Sleep(50 * time.Millisecond)
	select {
	case v := <-got:
		t.Fatalf("WatchChange answered %+v before anything changed", v)
	default:
	}
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-got:
		if v.State != StateApproved {
			t.Errorf("WatchChange = %s; want approved", v.State)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchChange did not wake within 5s of the approval")
	}
	// A state other than the one known answers at once.
	v, err := h.svc.WatchChange(bg, h.site, st.Pending, StatePending)
	if err != nil || v.State != StateApproved {
		t.Errorf("WatchChange with a stale state = %+v, %v", v, err)
	}
}
