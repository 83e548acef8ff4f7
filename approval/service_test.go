package approval

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mailauth/caddy-mailauth/directory"
	"github.com/mailauth/caddy-mailauth/store"
)

var (
	bg           = context.Background()
	pendingShape = regexp.MustCompile(`^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}$`)
)

func TestStartRefusesBadInput(t *testing.T) {
	h := newHarness(t)
	tests := map[string]string{
		"empty":            "",
		"spaces only":      "   ",
		"tabs and spaces":  " \t \n ",
		"newline inside":   "alice\nbcc: mallory@example.com",
		"carriage return":  "ali\rce",
		"NUL":              "ali\x00ce",
		"escape":           "\x1b[31malice",
		"DEL":              "alice\x7f",
		"C1 control":       "alice\u0085x",
		"invalid UTF-8":    "alice\xff",
		"255 bytes":        strings.Repeat("a", maxInput+1),
		"very long":        strings.Repeat("a", 10000),
		"255 bytes padded": " " + strings.Repeat("a", maxInput+1) + " ",
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			st, err := h.svc.Start(bg, StartRequest{Site: h.site, Input: in})
			if !errors.Is(err, ErrBadInput) {
				t.Errorf("Start(%q) = %+v, %v; want ErrBadInput", in, st, err)
			}
		})
	}
	h.svc.Wait()
	if n := len(h.mail.Messages()); n != 0 {
		t.Errorf("bad input queued %d mails, want none", n)
	}
	if n := h.countEvent(EventLoginStarted); n != 0 {
		t.Errorf("bad input started %d logins according to the audit log, want none", n)
	}
}

func TestStartAcceptsInputOfMaximalLengthAndTrimsSpaces(t *testing.T) {
	h := newHarness(t)
	for _, in := range []string{strings.Repeat("a", maxInput), "  " + strings.Repeat("a", maxInput) + "\t"} {
		if _, err := h.svc.Start(bg, StartRequest{Site: h.site, Input: in}); err != nil {
			t.Errorf("Start with %d bytes (%d once trimmed) = %v, want success", len(in), len(strings.TrimSpace(in)), err)
		}
	}
	h.start("  alice  ")
	if n := len(h.mail.Messages()); n != 1 {
		t.Errorf("Start(%q) queued %d mails, want 1: surrounding spaces must not hide a known user", "  alice  ", n)
	}
}

func TestStartRefusesUnknownProfile(t *testing.T) {
	h := newHarness(t)
	if _, err := h.svc.Start(bg, StartRequest{Site: nil, Input: aliceInput}); !errors.Is(err, ErrUnknownProfile) {
		t.Errorf("Start with profile %q = %v, want ErrUnknownProfile", "nope", err)
	}
}

func TestStartForUnknownUserQueuesNoMailButAnswersTheSame(t *testing.T) {
	h := newHarness(t)
	unknown := h.start("mallory@example.com")
	known, _ := h.startKnown()

	if n := len(h.mail.Messages()); n != 1 {
		t.Errorf("%d mails queued for one known and one unknown user, want 1", n)
	}
	if n := h.countEvent(EventUserUnknown); n != 1 {
		t.Errorf("the audit log has %d %q events, want 1; events: %v", n, EventUserUnknown, h.auditEvents())
	}
	for name, st := range map[string]*Started{"unknown": unknown, "known": known} {
		if !pendingShape.MatchString(st.Pending) {
			t.Errorf("%s user: pending cookie %q, want <22 chars>.<43 chars>", name, st.Pending)
		}
		if !referenceShape.MatchString(st.Reference) {
			t.Errorf("%s user: reference %q, want XXX-XXX", name, st.Reference)
		}
		if want := h.clock.Now().Add(testLinkLife); !st.ExpiresAt.Equal(want) {
			t.Errorf("%s user: ExpiresAt %v, want %v", name, st.ExpiresAt, want)
		}
		v, err := h.svc.Watch(bg, h.site, st.Pending)
		if err != nil {
			t.Fatalf("%s user: Watch = %v, want the pending login", name, err)
		}
		if v.State != StatePending {
			t.Errorf("%s user: Watch says %q, want %q: the waiting page must not tell who exists", name, v.State, StatePending)
		}
	}
}

func TestStartForKnownUserMailsALinkToTheProfileServer(t *testing.T) {
	h := newHarness(t)
	st, err := h.svc.Start(bg, StartRequest{
		Site:      h.site,
		Input:     "ALICE@example.com",
		ReturnURL: "/x",
		// A forged Host header must not end up in the link.
		App:       "evil.example",
		ClientIP:  testIP,
		UserAgent: testUA,
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	h.svc.Wait()
	msgs := h.mail.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d mails queued, want 1", len(msgs))
	}
	m := msgs[0]
	if m.To != aliceEmail {
		t.Errorf("mail goes to %q, want the user's address %q", m.To, aliceEmail)
	}
	if m.Reference != st.Reference {
		t.Errorf("mail carries reference %q, the browser was given %q", m.Reference, st.Reference)
	}
	if !m.ExpiresAt.Equal(st.ExpiresAt) {
		t.Errorf("mail expires at %v, the link at %v", m.ExpiresAt, st.ExpiresAt)
	}
	if len(m.Servers) != 1 || m.Servers[0] != "primary" {
		t.Errorf("mail servers %v, want the profile's [primary]", m.Servers)
	}
	links := linkPattern.FindAllStringSubmatch(m.Text, -1)
	if len(links) != 1 {
		t.Fatalf("the mail text holds %d links, want 1:\n%s", len(links), m.Text)
	}
	origin, path, token := links[0][1], links[0][2], links[0][3]
	if origin != testServer {
		t.Errorf("the link points at %q, want the profile server %q (never the request's host %q)", origin, testServer, "evil.example")
	}
	if path != VerifyPath {
		t.Errorf("the link path is %q, want %q", path, VerifyPath)
	}
	if len(token) != 43 || !validSecret(token) {
		t.Errorf("the link token %q is not 43 base64url characters", token)
	}
	if !strings.Contains(m.HTML, testServer+VerifyPath+"?token="+token) {
		t.Errorf("the HTML part does not carry the same link as the text part")
	}
	if !strings.Contains(m.Text, "15 minutes") {
		t.Errorf("the mail does not say the link lasts 15 minutes:\n%s", m.Text)
	}
	if n := h.countEvent(EventMailQueued); n != 1 {
		t.Errorf("the audit log has %d %q events, want 1", n, EventMailQueued)
	}
}

func TestStoreHoldsOnlyHashesOfTokenAndPendingSecret(t *testing.T) {
	h := newHarness(t)
	st, token := h.startKnown()
	id, secret := pendingParts(t, st.Pending)

	rec, err := h.store.Get(bg, links.key(hashSecret(token)))
	if err != nil {
		t.Fatalf("no link record under the token's hash: %v", err)
	}
	if _, err := h.store.Get(bg, links.key(token)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the plaintext token is a store key (Get returned %v)", err)
	}
	raw, err := h.store.Get(bg, logins.key(id))
	if err != nil {
		t.Fatalf("no login stored under its id: %v", err)
	}
	for name, v := range map[string][]byte{"link record": rec, "login": raw} {
		for what, s := range map[string]string{"link token": token, "pending secret": secret} {
			if bytes.Contains(v, []byte(s)) {
				t.Errorf("the stored %s contains the %s in plaintext: %s", name, what, v)
			}
		}
	}
	if !bytes.Contains(raw, []byte(hashSecret(secret))) {
		t.Errorf("the stored login does not hold the pending secret's hash: %s", raw)
	}
	if !bytes.Contains(rec, []byte(id)) {
		t.Errorf("the link record does not name its login %q: %s", id, rec)
	}
}

func TestOpenLinkChangesNothing(t *testing.T) {
	h := newHarness(t)
	st, token := h.startKnown()
	for i := 1; i <= 2; i++ {
		v, err := h.svc.OpenLink(bg, token, "", "198.51.100.9", "scanner")
		if err != nil {
			t.Fatalf("OpenLink #%d = %v, want the link's view", i, err)
		}
		if v.State != StatePending {
			t.Errorf("OpenLink #%d shows state %q, want %q", i, v.State, StatePending)
		}
		if v.User != "Alice Example" || v.App != testApp || v.ClientIP != testIP || v.Browser != "Firefox on Windows" || v.Reference != st.Reference {
			t.Errorf("OpenLink #%d shows %+v, want Alice Example asking for %s from %s, Firefox on Windows, ref %s", i, v, testApp, testIP, st.Reference)
		}
	}
	if _, err := h.store.Get(bg, links.key(hashSecret(token))); err != nil {
		t.Errorf("after two OpenLink calls the token is gone from the store (%v); a GET must not burn it", err)
	}
	w, err := h.svc.Watch(bg, h.site, st.Pending)
	if err != nil || w.State != StatePending {
		t.Errorf("after OpenLink, Watch = %+v, %v; want still pending", w, err)
	}
	if _, err := h.svc.Complete(bg, st.Pending, testIP, nil); !errors.Is(err, ErrNotApproved) {
		t.Errorf("after OpenLink, Complete = %v, want ErrNotApproved", err)
	}
	if n := h.countEvent(EventLinkOpened); n != 2 {
		t.Errorf("the audit log has %d %q events for two opens, want 2", n, EventLinkOpened)
	}
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); err != nil {
		t.Errorf("ConfirmLink after two OpenLink calls = %v, want success", err)
	}
}

func TestConfirmLinkApprovesOnce(t *testing.T) {
	h := newHarness(t)
	st, token := h.startKnown()
	h.clock.Advance(time.Minute)
	v, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA)
	if err != nil {
		t.Fatalf("ConfirmLink = %v, want success", err)
	}
	if v.State != StateApproved {
		t.Errorf("ConfirmLink shows state %q, want %q", v.State, StateApproved)
	}
	if w, err := h.svc.Watch(bg, h.site, st.Pending); err != nil || w.State != StateApproved {
		t.Errorf("after ConfirmLink, Watch = %+v, %v; want approved", w, err)
	}
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); !errors.Is(err, ErrLinkInvalid) {
		t.Errorf("second ConfirmLink = %v, want ErrLinkInvalid: a link works once", err)
	}
	if _, err := h.svc.OpenLink(bg, token, "", testIP, testUA); !errors.Is(err, ErrLinkInvalid) {
		t.Errorf("OpenLink of a used link = %v, want ErrLinkInvalid", err)
	}
	if n := h.countEvent(EventApproved); n != 1 {
		t.Errorf("the audit log has %d %q events, want 1", n, EventApproved)
	}
}

func TestLinkRefusesMalformedAndUnknownTokens(t *testing.T) {
	h := newHarness(t)
	_, token := h.startKnown()
	other, _ := newSecret(strings.NewReader(strings.Repeat("x", 64)), tokenBytes)
	for name, tok := range map[string]string{
		"empty":        "",
		"short":        token[:42],
		"long":         token + "A",
		"bad char":     token[:42] + "!",
		"the hash":     hashSecret(token),
		"unknown":      other,
		"with a space": " " + token[1:],
	} {
		if _, err := h.svc.OpenLink(bg, tok, "", testIP, testUA); !errors.Is(err, ErrLinkInvalid) {
			t.Errorf("OpenLink with %s token = %v, want ErrLinkInvalid", name, err)
		}
		if _, err := h.svc.ConfirmLink(bg, tok, "", testIP, testUA); !errors.Is(err, ErrLinkInvalid) {
			t.Errorf("ConfirmLink with %s token = %v, want ErrLinkInvalid", name, err)
		}
	}
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); err != nil {
		t.Errorf("after the failed attempts the real token no longer works: %v", err)
	}
}

func TestCompleteBeforeApprovalIsNotApproved(t *testing.T) {
	h := newHarness(t)
	st, _ := h.startKnown()
	if c, err := h.svc.Complete(bg, st.Pending, testIP, nil); !errors.Is(err, ErrNotApproved) {
		t.Errorf("Complete of a pending login = %+v, %v; want ErrNotApproved", c, err)
	}
	unknown := h.start("nobody")
	if c, err := h.svc.Complete(bg, unknown.Pending, testIP, nil); !errors.Is(err, ErrNotApproved) {
		t.Errorf("Complete of an unknown user's login = %+v, %v; want ErrNotApproved like any pending login", c, err)
	}
}

func TestCompleteNeedsTheStartingBrowsersSecret(t *testing.T) {
	h := newHarness(t)
	st, token := h.startKnown()
	other, _ := h.startKnown()
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); err != nil {
		t.Fatalf("ConfirmLink: %v", err)
	}
	id, secret := pendingParts(t, st.Pending)
	otherID, otherSecret := pendingParts(t, other.Pending)
	wrong, _ := newSecret(strings.NewReader(strings.Repeat("y", 64)), tokenBytes)
	for name, pending := range map[string]string{
		"wrong secret":              id + "." + wrong,
		"other login's secret":      id + "." + otherSecret,
		"other login's id":          otherID + "." + secret,
		"secret's hash":             id + "." + hashSecret(secret),
		"no secret":                 id,
		"empty secret":              id + ".",
		"no id":                     "." + secret,
		"empty":                     "",
		"unknown id":                "AAAAAAAAAAAAAAAAAAAAAA." + secret,
		"malformed secret":          id + "." + secret[:42],
		"id with path traversal":    "../" + id + "." + secret,
		"truncated cookie":          st.Pending[:len(st.Pending)-1],
		"cookie with trailing junk": st.Pending + "x",
	} {
		if _, err := h.svc.Complete(bg, pending, testIP, nil); !errors.Is(err, ErrLoginNotFound) {
			t.Errorf("Complete with %s = %v, want ErrLoginNotFound", name, err)
		}
		if _, err := h.svc.Watch(bg, h.site, pending); !errors.Is(err, ErrLoginNotFound) {
			t.Errorf("Watch with %s = %v, want ErrLoginNotFound", name, err)
		}
	}
	if _, err := h.svc.Complete(bg, st.Pending, testIP, nil); err != nil {
		t.Errorf("after the failed attempts, the right cookie cannot complete: %v", err)
	}
}

func TestCompleteAfterApprovalIssuesTheSessionOnce(t *testing.T) {
	h := newHarness(t)
	st, token := h.startKnown()
	h.clock.Advance(2 * time.Minute)
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); err != nil {
		t.Fatalf("ConfirmLink: %v", err)
	}
	h.clock.Advance(3 * time.Second)
	now := h.clock.Now()
	c, err := h.svc.Complete(bg, st.Pending, testIP, nil)
	if err != nil {
		t.Fatalf("Complete of an approved login = %v, want a session", err)
	}
	if c.ReturnURL != "/reports?q=1" {
		t.Errorf("Complete returns to %q, want the login's %q", c.ReturnURL, "/reports?q=1")
	}
	var s Session
	if err := h.svc.VerifySession(c.Cookie, &s); err != nil {
		t.Fatalf("VerifySession of the issued cookie = %v", err)
	}
	if s != c.Session {
		t.Errorf("the cookie holds %+v, Complete reported %+v", s, c.Session)
	}
	if s.User != "alice" || s.Email != aliceEmail || s.Profile() != testProfile {
		t.Errorf("session is for %q <%s> via %q, want alice <%s> via %q", s.User, s.Email, s.Profile(), aliceEmail, testProfile)
	}
	if s.IssuedAt != now.Unix() {
		t.Errorf("session issued at %v, want the time of Complete %v", time.Unix(s.IssuedAt, 0).UTC(), now)
	}
	if want := now.Add(testLifetime).Unix(); s.ExpiresAt != want {
		t.Errorf("session expires at %v, want now + %v = %v", time.Unix(s.ExpiresAt, 0).UTC(), testLifetime, time.Unix(want, 0).UTC())
	}
	if s.ID == [16]byte{} {
		t.Errorf("session id is all zero, want random")
	}
	if w, err := h.svc.Watch(bg, h.site, st.Pending); err != nil || w.State != StateCompleted {
		t.Errorf("after Complete, Watch = %+v, %v; want completed", w, err)
	}
	if _, err := h.svc.Complete(bg, st.Pending, testIP, nil); !errors.Is(err, ErrAlreadyDecided) {
		t.Errorf("second Complete = %v, want ErrAlreadyDecided: a login yields one session", err)
	}
	if n := h.countEvent(EventSessionIssued); n != 1 {
		t.Errorf("the audit log has %d %q events, want 1", n, EventSessionIssued)
	}

	h.clock.Advance(testLifetime - time.Second)
	if err := h.svc.VerifySession(c.Cookie, &s); err != nil {
		t.Errorf("one second before the session ends, VerifySession = %v", err)
	}
	h.clock.Advance(time.Second)
	if err := h.svc.VerifySession(c.Cookie, &s); !errors.Is(err, ErrSessionExpired) {
		t.Errorf("once the session lifetime has passed, VerifySession = %v, want ErrSessionExpired", err)
	}
}

func TestSessionsOfTwoLoginsDiffer(t *testing.T) {
	h := newHarness(t)
	var ids [][16]byte
	for range 2 {
		st, token := h.startKnown()
		if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); err != nil {
			t.Fatal(err)
		}
		c, err := h.svc.Complete(bg, st.Pending, testIP, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, c.Session.ID)
	}
	if ids[0] == ids[1] {
		t.Errorf("two logins got the same session id %x", ids[0])
	}
}

func TestLinkAfterExpiryFails(t *testing.T) {
	h := newHarness(t)
	st, token := h.startKnown()
	h.clock.Advance(testLinkLife)

	if w, err := h.svc.Watch(bg, h.site, st.Pending); err != nil || w.State != StateExpired {
		t.Errorf("at the link's expiry, Watch = %+v, %v; want expired", w, err)
	}
	if v, err := h.svc.OpenLink(bg, token, "", testIP, testUA); err == nil && v.State != StateExpired {
		t.Errorf("OpenLink of an expired link shows state %q, want %q or an error", v.State, StateExpired)
	}
	_, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA)
	if !errors.Is(err, ErrLinkInvalid) && !errors.Is(err, ErrLoginExpired) {
		t.Errorf("ConfirmLink of an expired link = %v, want ErrLinkInvalid or ErrLoginExpired", err)
	}
	if w, err := h.svc.Watch(bg, h.site, st.Pending); err != nil || w.State != StateExpired {
		t.Errorf("after a late ConfirmLink, Watch = %+v, %v; want still expired", w, err)
	}
	if _, err := h.svc.Complete(bg, st.Pending, testIP, nil); !errors.Is(err, ErrLoginExpired) {
		t.Errorf("Complete of an expired login = %v, want ErrLoginExpired", err)
	}
}

func TestLinkJustBeforeExpiryWorks(t *testing.T) {
	h := newHarness(t)
	st, token := h.startKnown()
	h.clock.Advance(testLinkLife - time.Second)
	if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); err != nil {
		t.Fatalf("ConfirmLink one second before expiry = %v, want success", err)
	}
	// The browser may be slower than the link: an approval made in time
	// can still be collected after the link's expiry.
	h.clock.Advance(time.Minute)
	if _, err := h.svc.Complete(bg, st.Pending, testIP, nil); err != nil {
		t.Errorf("Complete a minute after an in-time approval = %v, want a session", err)
	}
}

func TestDispatchAfterExpiryQueuesNoMail(t *testing.T) {
	dir := &blockingDirectory{release: make(chan struct{})}
	h := newHarnessWith(t, []directory.Directory{dir})
	st, err := h.svc.Start(bg, StartRequest{Site: h.site, Input: aliceInput})
	if err != nil {
		t.Fatal(err)
	}
	// The directory answers only after the link has died.
	h.clock.Advance(testLinkLife)
	close(dir.release)
	h.svc.Wait()
	if msgs := h.mail.Messages(); len(msgs) != 0 {
		t.Errorf("a lookup that finished after the link's expiry queued %d mails, want none: a dead link is worse than no mail", len(msgs))
	}
	if w, err := h.svc.Watch(bg, h.site, st.Pending); err != nil || w.State != StateExpired {
		t.Errorf("Watch = %+v, %v; want expired", w, err)
	}
}

func TestDirectoryFailureQueuesNoMailAndIsAudited(t *testing.T) {
	dir := &blockingDirectory{release: make(chan struct{}), err: errors.New("ldap: connection refused")}
	close(dir.release)
	h := newHarnessWith(t, []directory.Directory{dir})
	st := h.start(aliceInput)
	if !pendingShape.MatchString(st.Pending) {
		t.Errorf("with the directory down, Start answered %+v, want the usual answer", st)
	}
	if msgs := h.mail.Messages(); len(msgs) != 0 {
		t.Errorf("a failed lookup queued %d mails, want none", len(msgs))
	}
	if n := h.countEvent(EventDirectoryError); n != 1 {
		t.Errorf("the audit log has %d %q events, want 1; events: %v", n, EventDirectoryError, h.auditEvents())
	}
	if n := h.countEvent(EventUserUnknown); n != 0 {
		t.Errorf("a directory that could not answer was audited as %q", EventUserUnknown)
	}
}

func TestCloseStopsAPendingLookup(t *testing.T) {
	dir := &blockingDirectory{release: make(chan struct{})}
	h := newHarnessWith(t, []directory.Directory{dir})
	if _, err := h.svc.Start(bg, StartRequest{Site: h.site, Input: aliceInput}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		h.svc.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		close(dir.release)
		t.Fatal("Close did not return while a directory lookup was stuck: it must cancel background dispatch")
	}
	if msgs := h.mail.Messages(); len(msgs) != 0 {
		t.Errorf("a lookup cancelled by Close queued %d mails", len(msgs))
	}
}

func TestConcurrentConfirmLinkSucceedsExactlyOnce(t *testing.T) {
	h := newHarness(t)
	st, token := h.startKnown()
	const n = 20
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, n)
	)
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = h.svc.ConfirmLink(bg, token, "", testIP, testUA)
		})
	}
	close(start)
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrLinkInvalid):
			t.Errorf("ConfirmLink #%d lost the race with %v, want ErrLinkInvalid", i, err)
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d concurrent ConfirmLink calls on one token succeeded, want exactly 1", ok, n)
	}
	if c := h.countEvent(EventApproved); c != 1 {
		t.Errorf("the audit log has %d %q events, want 1", c, EventApproved)
	}
	if _, err := h.svc.Complete(bg, st.Pending, testIP, nil); err != nil {
		t.Errorf("Complete after the race = %v, want a session", err)
	}
}

func TestStartSanitizesReturnURL(t *testing.T) {
	h := newHarness(t)
	for in, want := range map[string]string{
		"https://evil.example/": "/",
		"//evil.example":        "/",
		"":                      "/",
		"/reports?q=1#top":      "/reports?q=1#top",
	} {
		st, err := h.svc.Start(bg, StartRequest{Site: h.site, Input: aliceInput, ReturnURL: in})
		if err != nil {
			t.Fatal(err)
		}
		h.svc.Wait()
		w, err := h.svc.Watch(bg, h.site, st.Pending)
		if err != nil {
			t.Fatal(err)
		}
		if w.ReturnURL != want {
			t.Errorf("Start with return URL %q: the login returns to %q, want %q", in, w.ReturnURL, want)
		}
		msgs := h.mail.Messages()
		token := linkPattern.FindStringSubmatch(msgs[len(msgs)-1].Text)[3]
		if _, err := h.svc.ConfirmLink(bg, token, "", testIP, testUA); err != nil {
			t.Fatal(err)
		}
		c, err := h.svc.Complete(bg, st.Pending, testIP, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.ReturnURL != want {
			t.Errorf("Start with return URL %q: Complete sends the browser to %q, want %q", in, c.ReturnURL, want)
		}
	}
}

func TestNewServiceRefusesIncompleteConfig(t *testing.T) {
	h := newHarness(t)
	good := h.svc.cfg
	tests := map[string]func(c *Config){
		"no store":      func(c *Config) { c.Store = nil },
		"no mail queue": func(c *Config) { c.Mail = nil },
		"no codec":      func(c *Config) { c.Codec = nil },
		"zero lifetime": func(c *Config) { c.SessionLifetime = 0 },
		"profile without URL": func(c *Config) {
			c.Profiles = map[string]*Profile{"p": {Name: "p", LinkExpiration: time.Minute, Templates: good.Profiles[testProfile].Templates}}
		},
		"profile without expiry": func(c *Config) {
			c.Profiles = map[string]*Profile{"p": {Name: "p", Server: testServer, Templates: good.Profiles[testProfile].Templates}}
		},
		"profile without templates": func(c *Config) {
			c.Profiles = map[string]*Profile{"p": {Name: "p", Server: testServer, LinkExpiration: time.Minute}}
		},
	}
	for name, breakIt := range tests {
		c := good
		breakIt(&c)
		if s, err := NewService(c); err == nil {
			s.Close()
			t.Errorf("NewService with %s succeeded, want an error", name)
		}
	}
}

func TestOutboxFailureIsAuditedAsMailFailed(t *testing.T) {
	h := newHarness(t)
	h.mail.err = errors.New("outbox: disk full")
	h.start(aliceInput)
	lines := h.logs.FilterMessage(string(EventMailFailed)).All()
	if len(lines) != 1 {
		t.Fatalf("a refused enqueue gave %d %q lines, want 1; events: %v", len(lines), EventMailFailed, h.auditEvents())
	}
	if r := lines[0].ContextMap()["reason"]; r != "outbox" {
		t.Errorf("%q line gives reason %v, want %q", EventMailFailed, r, "outbox")
	}
	if n := h.countEvent(EventMailQueued); n != 0 {
		t.Errorf("a refused enqueue was audited as %q", EventMailQueued)
	}
}

func TestTruncateCutsOnRuneBoundaries(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly", 7, "exactly"},
		{"abcdef", 3, "abc"},
		{"aé", 2, "a"},  // é is two bytes; half of it is dropped
		{"日本語", 4, "日"}, // three-byte runes
		{"日本語", 6, "日本"},
		{"日本語", 2, ""},
	}
	for _, tt := range tests {
		got := truncate(tt.in, tt.n)
		if got != tt.want {
			t.Errorf("truncate(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
		if !utf8.ValidString(got) {
			t.Errorf("truncate(%q, %d) = %q is not valid UTF-8", tt.in, tt.n, got)
		}
	}
}

func TestLongUserAgentIsStoredTruncated(t *testing.T) {
	h := newHarness(t)
	ua := testUA + strings.Repeat("é", 600)
	st, err := h.svc.Start(bg, StartRequest{Site: h.site, Input: aliceInput, UserAgent: ua})
	if err != nil {
		t.Fatal(err)
	}
	h.svc.Wait()
	id, _ := pendingParts(t, st.Pending)
	l, err := h.svc.getLogin(bg, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.UserAgent) > 512 || !utf8.ValidString(l.UserAgent) || !strings.HasPrefix(ua, l.UserAgent) {
		t.Errorf("a %d-byte user agent was stored as %d bytes (valid UTF-8: %v); want a prefix of at most 512 bytes", len(ua), len(l.UserAgent), utf8.ValidString(l.UserAgent))
	}
}
