package approval

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mailauth/caddy-mailauth/approval/mailtemplate"
	"github.com/mailauth/caddy-mailauth/directory"
	"github.com/mailauth/caddy-mailauth/mailer"
	"github.com/mailauth/caddy-mailauth/store"
)

// fakeClock is a clock that moves only when a test advances it.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 3, 4, 10, 42, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakeMailQueue keeps every queued message in memory, or refuses them all
// with err when it is set.
type fakeMailQueue struct {
	mu   sync.Mutex
	msgs []*mailer.Message
	err  error
}

func (q *fakeMailQueue) Enqueue(_ context.Context, m *mailer.Message) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return q.err
	}
	c := *m
	q.msgs = append(q.msgs, &c)
	return nil
}

func (q *fakeMailQueue) Messages() []*mailer.Message {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]*mailer.Message(nil), q.msgs...)
}

// blockingDirectory answers lookups only once release is closed, with err
// if set and otherwise with alice.
type blockingDirectory struct {
	release chan struct{}
	err     error
}

func (d *blockingDirectory) Name() string { return "blocking" }

func (d *blockingDirectory) Lookup(ctx context.Context, input string) (*directory.Identity, error) {
	select {
	case <-d.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if d.err != nil {
		return nil, d.err
	}
	return &directory.Identity{Username: "alice", Email: aliceEmail, Directory: "blocking"}, nil
}

// Test fixture values.
const (
	testServer   = "https://apps.example.com"
	testApp      = "finance.example.com"
	testProfile  = "daily"
	testLinkLife = 15 * time.Minute
	testLifetime = 8 * time.Hour
	testIP       = "203.0.113.7"
	testUA       = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
	aliceInput   = "alice"
	aliceEmail   = "alice@example.com"
)

// harness is a Service wired to real in-memory Badger, a local directory,
// the built-in templates, a fake mail queue, a fake clock and an observed
// audit log.
type harness struct {
	t     *testing.T
	svc   *Service
	store store.Store
	mail  *fakeMailQueue
	clock *fakeClock
	logs  *observer.ObservedLogs
	codec *SessionCodec
	site  *Site
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessWith(t, nil)
}

// newHarnessWith is newHarness with the profile's directories replaced by
// dirs, unless dirs is nil.
func newHarnessWith(t *testing.T, dirs []directory.Directory) *harness {
	t.Helper()
	return newHarnessOn(t, dirs, nil)
}

// newHarnessOn is newHarnessWith on a store that wrap makes of the
// in-memory Badger, unless wrap is nil.
func newHarnessOn(t *testing.T, dirs []directory.Directory, wrap func(store.Store) store.Store) *harness {
	t.Helper()
	return newHarnessTuned(t, dirs, wrap, nil)
}

// newHarnessTuned is newHarnessOn with tune changing the service's
// Config before it is built.
func newHarnessTuned(t *testing.T, dirs []directory.Directory, wrap func(store.Store) store.Store, tune func(*Config)) *harness {
	t.Helper()
	var st store.Store
	st, err := store.OpenBadger(store.BadgerOptions{InMemory: true}, zap.NewNop())
	if err != nil {
		t.Fatalf("opening in-memory badger: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	if wrap != nil {
		st = wrap(st)
	}
	dir, err := directory.NewLocal("staff", []directory.LocalUser{
		{Username: "alice", Name: "Alice Example", Email: aliceEmail, Sponsor: "bob@example.com"},
		{Username: "carol", Email: "carol@example.com"},
	})
	if err != nil {
		t.Fatalf("building local directory: %v", err)
	}
	if dirs == nil {
		dirs = []directory.Directory{dir}
	}
	tpl, err := mailtemplate.Parse("", "", "")
	if err != nil {
		t.Fatalf("parsing built-in templates: %v", err)
	}
	codec, err := NewSessionCodec(testKey(1))
	codeKey := testKey(2)
	if err != nil {
		t.Fatalf("building session codec: %v", err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	h := &harness{t: t, store: st, mail: &fakeMailQueue{}, clock: newFakeClock(), logs: logs, codec: codec}
	profile := &Profile{
		Name:           testProfile,
		Type:           TypeUser,
		Server:         testServer,
		LinkExpiration: testLinkLife,
		MailServers:    []string{"primary"},
		Directories:    dirs,
		Templates:      tpl,
		// The user-flow tests confirm without picking a number; number
		// matching has its own tests.
		NoNumberMatching: true,
	}
	h.site = NewSite(profile, nil)
	audit := NewAuditor(zap.New(core).Named("mailauth.audit"))
	trail := NewAuditTrail(st, 0, zap.New(core))
	t.Cleanup(trail.Close)
	audit.Persist(trail, h.clock.Now)
	cfg := Config{
		Store:           st,
		Mail:            h.mail,
		Profiles:        map[string]*Profile{testProfile: profile},
		Codec:           codec,
		CodeKey:         codeKey,
		SessionLifetime: testLifetime,
		Audit:           audit,
		Logger:          zap.New(core),
		Now:             h.clock.Now,
	}
	if tune != nil {
		tune(&cfg)
	}
	h.svc, err = NewService(cfg)
	if err != nil {
		t.Fatalf("NewService: %v", err)
	}
	t.Cleanup(h.svc.Close)
	return h
}

// start begins a login for input and waits until it is dispatched.
func (h *harness) start(input string) *Started {
	h.t.Helper()
	st, err := h.svc.Start(context.Background(), StartRequest{
		Site:      h.site,
		Input:     input,
		ReturnURL: "/reports?q=1",
		App:       testApp,
		ClientIP:  testIP,
		UserAgent: testUA,
	})
	if err != nil {
		h.t.Fatalf("Start(%q): %v", input, err)
	}
	h.svc.Wait()
	return st
}

var linkPattern = regexp.MustCompile(`(https?://[^\s/]+)(/\S*)\?token=([A-Za-z0-9_-]+)`)

// startKnown begins a login for alice and returns what the browser keeps
// and the token from the one mail that was queued.
func (h *harness) startKnown() (*Started, string) {
	h.t.Helper()
	return h.startKnownAs(aliceInput, aliceEmail)
}

// startKnownAs is startKnown for another user of the directory.
func (h *harness) startKnownAs(input, email string) (*Started, string) {
	h.t.Helper()
	before := len(h.mail.Messages())
	st := h.start(input)
	msgs := h.mail.Messages()
	if len(msgs) != before+1 {
		h.t.Fatalf("starting a login for a known user queued %d mails, want 1", len(msgs)-before)
	}
	if to := msgs[len(msgs)-1].To; to != email {
		h.t.Fatalf("the approval mail went to %q, want %q", to, email)
	}
	m := linkPattern.FindStringSubmatch(msgs[len(msgs)-1].Text)
	if m == nil {
		h.t.Fatalf("the approval mail has no link; text:\n%s", msgs[len(msgs)-1].Text)
	}
	return st, m[3]
}

// auditEvents returns the event names written so far, in order.
func (h *harness) auditEvents() []string {
	var evs []string
	for _, e := range h.logs.FilterLoggerName("mailauth.audit").All() {
		evs = append(evs, e.Message)
	}
	return evs
}

func (h *harness) countEvent(ev Event) int {
	n := 0
	for _, e := range h.auditEvents() {
		if e == string(ev) {
			n++
		}
	}
	return n
}

// pendingParts splits a pending cookie value into login id and secret.
func pendingParts(t *testing.T, pending string) (id, secret string) {
	t.Helper()
	id, secret, ok := strings.Cut(pending, ".")
	if !ok {
		t.Fatalf("pending cookie %q has no dot between id and secret", pending)
	}
	return id, secret
}

// testKey returns a fixed session key; distinct seeds give keys with
// distinct ids for the seeds the tests use.
func testKey(seed byte) []byte {
	k := make([]byte, SessionKeySize)
	for i := range k {
		k[i] = seed + byte(i)
	}
	return k
}

// faultyStore is a store that fails the operations a test asks it to and
// records every key/value operation as "<Method> <key kind>", the kind
// being the key up to its first slash ("login/", "code/") or the whole
// key.
type faultyStore struct {
	store.Store
	mu    sync.Mutex
	calls []string
	// fail maps "<Method> <key kind>" to how many of the next such calls
	// fail; after, when set, makes them fail only once done.
	fail  map[string]int
	after bool
}

// errFaulty is what a faultyStore's failing operations return.
var errFaulty = errors.New("faulty store: injected failure")

func newFaultyStore(st store.Store) *faultyStore {
	return &faultyStore{Store: st, fail: map[string]int{}}
}

// failNext makes the next n calls of op (such as "Update login/") fail
// before they change anything.
func (f *faultyStore) failNext(op string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[op], f.after = n, false
}

// failNextAfter makes the next n calls of op fail after they took effect,
// as a store does whose reply is lost after it committed.
func (f *faultyStore) failNextAfter(op string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[op], f.after = n, true
}

// record notes a call and says whether it fails, and whether before or
// after it takes effect.
func (f *faultyStore) record(method, key string) (fail, after bool) {
	kind := key
	if i := strings.IndexByte(key, '/'); i >= 0 {
		kind = key[:i+1]
	}
	op := method + " " + kind
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, op)
	if f.fail[op] > 0 {
		f.fail[op]--
		return true, f.after
	}
	return false, false
}

// takeCalls returns the calls recorded since the last takeCalls.
func (f *faultyStore) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func (f *faultyStore) run(method, key string, op func() error) error {
	fail, after := f.record(method, key)
	if fail && !after {
		return errFaulty
	}
	err := op()
	if fail {
		return errFaulty
	}
	return err
}

func (f *faultyStore) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	return f.run("Put", key, func() error { return f.Store.Put(ctx, key, value, ttl) })
}

func (f *faultyStore) PutMany(ctx context.Context, entries []store.Entry) error {
	var fail bool
	for _, e := range entries {
		if bad, _ := f.record("PutMany", e.Key); bad {
			fail = true
		}
	}
	if fail {
		return errFaulty
	}
	return f.Store.PutMany(ctx, entries)
}

func (f *faultyStore) Get(ctx context.Context, key string) (v []byte, err error) {
	err = f.run("Get", key, func() error { v, err = f.Store.Get(ctx, key); return err })
	return v, err
}

func (f *faultyStore) Take(ctx context.Context, key string) (v []byte, err error) {
	err = f.run("Take", key, func() error { v, err = f.Store.Take(ctx, key); return err })
	return v, err
}

func (f *faultyStore) Delete(ctx context.Context, key string) error {
	return f.run("Delete", key, func() error { return f.Store.Delete(ctx, key) })
}

func (f *faultyStore) Update(ctx context.Context, key string, ttl time.Duration, fn func([]byte, bool) ([]byte, error)) error {
	return f.run("Update", key, func() error { return f.Store.Update(ctx, key, ttl, fn) })
}
