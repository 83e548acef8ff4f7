package directory

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mailauth/caddy-mailauth/test/slapd"
)

// newTestLDAP returns a directory named "corp" on s, bound as the fixture's
// service account, after change (if any) edits its config.
func newTestLDAP(t testing.TB, s *slapd.Server, change func(*LDAPConfig)) *LDAP {
	t.Helper()
	d, _ := newObservedLDAP(t, s, change)
	return d
}

// newObservedLDAP is newTestLDAP that also returns the directory's logs.
func newObservedLDAP(t testing.TB, s *slapd.Server, change func(*LDAPConfig)) (*LDAP, *observer.ObservedLogs) {
	t.Helper()
	cfg := LDAPConfig{
		URL:          s.URL,
		BindDN:       s.BindDN,
		BindPassword: s.BindPassword,
		BaseDN:       s.BaseDN,
		RootCAs:      s.CACertPool,
		Timeout:      2 * time.Second,
	}
	if change != nil {
		change(&cfg)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	d, err := NewLDAP("corp", cfg, zap.New(core))
	if err != nil {
		t.Fatalf("NewLDAP: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d, logs
}

func mustLookup(t *testing.T, d Directory, input string) *Identity {
	t.Helper()
	id, err := d.Lookup(context.Background(), input)
	if err != nil {
		t.Fatalf("Lookup(%q): %v", input, err)
	}
	return id
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestLDAPLookupByUIDReturnsTheIdentityWithManagerEmail(t *testing.T) {
	t.Parallel()
	d := newTestLDAP(t, slapd.Start(t), nil)
	id := mustLookup(t, d, "carol")
	want := Identity{Username: "carol", Name: "Carol Example", Email: "carol@example.test", ManagerEmail: "dave@example.test", Directory: "corp"}
	got := *id
	got.Attributes = nil
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
		t.Errorf("Lookup(carol) = %+v, want %+v", got, want)
	}
	if id := mustLookup(t, d, "dave"); id.ManagerEmail != "erin@example.test" {
		t.Errorf("dave's ManagerEmail = %q, want erin@example.test (his manager's mail)", id.ManagerEmail)
	}
	if id := mustLookup(t, d, "erin"); id.ManagerEmail != "" {
		t.Errorf("erin has no manager, but ManagerEmail = %q", id.ManagerEmail)
	}
}

func TestLDAPLookupByMailIgnoresCase(t *testing.T) {
	t.Parallel()
	d := newTestLDAP(t, slapd.Start(t), nil)
	for _, input := range []string{"carol@example.test", "Carol@EXAMPLE.test", "  carol@example.test  ", "CAROL"} {
		if id := mustLookup(t, d, input); id.Username != "carol" {
			t.Errorf("Lookup(%q) found %q, want carol", input, id.Username)
		}
	}
}

func TestLDAPLookupFillsPolicyAttributes(t *testing.T) {
	t.Parallel()
	d := newTestLDAP(t, slapd.Start(t), func(c *LDAPConfig) { c.Attributes = []string{"title", "sn"} })
	dave := mustLookup(t, d, "dave")
	want := map[string][]string{
		"memberOf":   {"cn=executives,ou=groups,dc=example,dc=test", "cn=finance-board,ou=groups,dc=example,dc=test"},
		"group_name": {"executives", "finance-board"},
		"department": {"Executive"},
		"username":   {"dave"},
		"mail":       {"dave@example.test"},
		"sn":         {"Example"},
	}
	for k, v := range want {
		got := slices.Clone(dave.Attributes[k])
		slices.Sort(got)
		if !slices.Equal(got, v) {
			t.Errorf("dave's %s = %q, want %q", k, got, v)
		}
	}
	if _, ok := dave.Attributes["title"]; ok {
		t.Errorf("dave has no title, yet Attributes[title] = %q; absent attributes should be absent keys", dave.Attributes["title"])
	}
	if len(dave.Attributes) != len(want) {
		t.Errorf("dave's attribute keys = %v, want exactly those of %v", keys(dave.Attributes), keys(want))
	}
	carol := mustLookup(t, d, "carol")
	if got := carol.Attributes["title"]; !slices.Equal(got, []string{"Engineer", "On-call lead"}) {
		t.Errorf("carol's configured multi-valued title = %q, want both values", got)
	}
	if got := carol.Attributes["group_name"]; !slices.Equal(got, []string{"it"}) {
		t.Errorf("carol's group_name = %q, want [it]", got)
	}
}

func keys(m map[string][]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestLDAPLookupUsesConfiguredAttributeNames(t *testing.T) {
	t.Parallel()
	d := newTestLDAP(t, slapd.Start(t), func(c *LDAPConfig) {
		c.UserFilter = "(&(objectClass=inetOrgPerson)(cn={input}))"
		c.NameAttribute = "sn"
		c.DepartmentAttribute = "title"
	})
	id := mustLookup(t, d, "carol example")
	if id.Username != "carol" || id.Name != "Example" {
		t.Errorf("with user_filter on cn and name_attribute sn: username %q, name %q; want carol, Example", id.Username, id.Name)
	}
	if got := id.Attributes["department"]; !slices.Equal(got, []string{"Engineer", "On-call lead"}) {
		t.Errorf("department from department_attribute title = %q", got)
	}
}

func TestLDAPLookupKeepsUserWhoseManagerHasNoMail(t *testing.T) {
	t.Parallel()
	d, logs := newObservedLDAP(t, slapd.Start(t), nil)
	id := mustLookup(t, d, "grace")
	if id.Email != "grace@example.test" || id.ManagerEmail != "" {
		t.Errorf("grace: Email %q, ManagerEmail %q; want her mail and no manager email (henry has none)", id.Email, id.ManagerEmail)
	}
	warned := logs.FilterMessage("ldap manager has no mail").FilterField(zap.String("manager_dn", "uid=henry,ou=people,dc=example,dc=test"))
	if warned.Len() != 1 {
		t.Errorf("want one warning naming henry's DN, got logs %v", logs.All())
	}
}

func TestLDAPLookupKeepsUserWhoseManagerEntryIsMissing(t *testing.T) {
	t.Parallel()
	d, logs := newObservedLDAP(t, slapd.Start(t), nil)
	id := mustLookup(t, d, "ivan")
	if id.ManagerEmail != "" {
		t.Errorf("ivan's manager does not exist, yet ManagerEmail = %q", id.ManagerEmail)
	}
	if logs.FilterMessage("ldap manager entry not readable").FilterField(zap.String("manager_dn", "uid=nobody,ou=people,dc=example,dc=test")).Len() != 1 {
		t.Errorf("want one warning naming the missing manager DN, got logs %v", logs.All())
	}
}

func TestLDAPLookupOfUserWithoutMailIsErrNoEmailNotErrNotFound(t *testing.T) {
	t.Parallel()
	d := newTestLDAP(t, slapd.Start(t), nil)
	_, err := d.Lookup(context.Background(), "frank")
	if !errors.Is(err, ErrNoEmail) || errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup(frank) error = %v; want ErrNoEmail, not ErrNotFound", err)
	}
	if want := `directory "corp": user "frank" has no mail attribute`; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

func TestLDAPLookupOfUnknownUserIsErrNotFound(t *testing.T) {
	t.Parallel()
	d := newTestLDAP(t, slapd.Start(t), nil)
	for _, input := range []string{"alice", "nobody@example.test", "gateway"} {
		if _, err := d.Lookup(context.Background(), input); err != ErrNotFound {
			t.Errorf("Lookup(%q) error = %v, want ErrNotFound", input, err)
		}
	}
}

func TestLDAPLookupOfBlankOrInvalidInputIsErrNotFoundWithoutQuerying(t *testing.T) {
	t.Parallel()
	// Nothing listens here, so any query would fail with a network error.
	d, err := NewLDAP("corp", LDAPConfig{URL: "ldap://" + closedPort(t), BaseDN: "dc=example,dc=test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, input := range []string{"", "   ", "\t\n", "caro\xffl"} {
		if _, err := d.Lookup(context.Background(), input); err != ErrNotFound {
			t.Errorf("Lookup(%q) error = %v, want ErrNotFound without a query", input, err)
		}
	}
}

func TestLDAPLookupEscapesFilterMetacharacters(t *testing.T) {
	t.Parallel()
	d := newTestLDAP(t, slapd.Start(t), nil)
	if id := mustLookup(t, d, "a*b(c)"); id.Username != "a*b(c)" || id.Email != "odd@example.test" {
		t.Errorf("Lookup(a*b(c)) = %q <%s>, want the user with that exact uid", id.Username, id.Email)
	}
	for _, input := range []string{"*", "*)(uid=*", "*)(|(uid=*", "carol)(uid=*", "a*", "(uid=carol)", `carol\2a`, "ca*ol", "*@example.test"} {
		if _, err := d.Lookup(context.Background(), input); err != ErrNotFound {
			t.Errorf("Lookup(%q) error = %v, want ErrNotFound: the input must match literally", input, err)
		}
	}
}

func TestLDAPLookupMatchingSeveralEntriesIsAnErrorNotErrNotFound(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t)
	d := newTestLDAP(t, s, nil)
	_, err := d.Lookup(context.Background(), "ops@example.test")
	if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "more than one entry") {
		t.Errorf("Lookup of a mail two users share: error = %v, want an ambiguity error", err)
	}
	// A filter matching every person exceeds the size limit of 2.
	wide := newTestLDAP(t, s, func(c *LDAPConfig) { c.UserFilter = "(|(uid={input})(objectClass=inetOrgPerson))" })
	_, err = wide.Lookup(context.Background(), "carol")
	if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "more than one entry") {
		t.Errorf("Lookup with a filter matching everyone: error = %v, want an ambiguity error", err)
	}
	// The connection that answered stays in the pool.
	wide.pool.mu.Lock()
	idle := len(wide.pool.idle)
	wide.pool.mu.Unlock()
	if idle != 1 {
		t.Errorf("after an ambiguous answer the pool holds %d idle connections, want the one that answered", idle)
	}
}

func TestLDAPLookupMissingBaseDNIsAnErrorNotErrNotFound(t *testing.T) {
	t.Parallel()
	d := newTestLDAP(t, slapd.Start(t), func(c *LDAPConfig) { c.BaseDN = "ou=nowhere,dc=example,dc=test" })
	_, err := d.Lookup(context.Background(), "carol")
	if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "base_dn") {
		t.Errorf("Lookup under a base DN that does not exist: error = %v, want an error naming base_dn", err)
	}
}

func TestLDAPSWithTheServerCAWorks(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t)
	d := newTestLDAP(t, s, func(c *LDAPConfig) { c.URL = s.LDAPSURL })
	if id := mustLookup(t, d, "carol"); id.Email != "carol@example.test" {
		t.Errorf("over ldaps: email %q", id.Email)
	}
}

func TestLDAPSWithoutTheServerCAFailsCertificateVerification(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t)
	d := newTestLDAP(t, s, func(c *LDAPConfig) { c.URL = s.LDAPSURL; c.RootCAs = nil })
	_, err := d.Lookup(context.Background(), "carol")
	var verr *tls.CertificateVerificationError
	if !errors.As(err, &verr) || errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup over ldaps with system roots only: error = %v, want a certificate verification error", err)
	}
}

func TestStartTLSWithTheServerCAWorks(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t)
	d := newTestLDAP(t, s, func(c *LDAPConfig) { c.StartTLS = true })
	if id := mustLookup(t, d, "dave"); id.ManagerEmail != "erin@example.test" {
		t.Errorf("over StartTLS: manager email %q", id.ManagerEmail)
	}
	c, _, err := d.pool.get(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer d.pool.put(c)
	if _, ok := c.TLSConnectionState(); !ok {
		t.Error("a pooled StartTLS connection is not using TLS")
	}
	bare := newTestLDAP(t, s, func(c *LDAPConfig) { c.StartTLS = true; c.RootCAs = nil })
	// go-ldap's StartTLS reports the handshake error as text only.
	if _, err := bare.Lookup(context.Background(), "dave"); err == nil || !strings.Contains(err.Error(), "failed to verify certificate") {
		t.Errorf("StartTLS with system roots only: error = %v, want a certificate verification error", err)
	}
}

func TestLDAPLookupWithWrongBindPasswordFailsAndDoesNotRebindAtOnce(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t)
	d := newTestLDAP(t, s, func(c *LDAPConfig) { c.BindPassword = "wrong" })
	_, err := d.Lookup(context.Background(), "carol")
	if err == nil || errors.Is(err, ErrNotFound) || !ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
		t.Fatalf("Lookup with a wrong bind password: error = %v, want invalid credentials (49)", err)
	}
	if !strings.HasPrefix(err.Error(), `directory "corp": ldap: binding as "cn=gateway,`) {
		t.Errorf("error %q should say which directory and which bind failed", err)
	}
	// Within the backoff the pool repeats the failure without binding
	// again: with the server gone, the answer is still the bind error.
	s.Stop()
	_, err2 := d.Lookup(context.Background(), "carol")
	if !ldap.IsErrorWithCode(err2, ldap.LDAPResultInvalidCredentials) {
		t.Errorf("second lookup within the backoff: error = %v, want the cached bind failure", err2)
	}
	// After the backoff it tries again, and now sees the server is down.
	d.pool.now = func() time.Time { return time.Now().Add(bindFailureBackoff + time.Second) }
	_, err3 := d.Lookup(context.Background(), "carol")
	if err3 == nil || ldap.IsErrorWithCode(err3, ldap.LDAPResultInvalidCredentials) {
		t.Errorf("lookup after the backoff: error = %v, want a fresh connection error", err3)
	}
}

func TestLDAPLookupAgainstStoppedServerFailsWithinTheTimeout(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t)
	d := newTestLDAP(t, s, func(c *LDAPConfig) { c.Timeout = time.Second })
	mustLookup(t, d, "carol")
	s.Stop()
	start := time.Now()
	_, err := d.Lookup(context.Background(), "carol")
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup against a stopped server: error = %v, want a connection error", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Lookup against a stopped server took %s, want under the 1s timeout (plus slack)", elapsed)
	}
}

// blackHole accepts connections and never answers.
func blackHole(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

func TestLDAPLookupAgainstUnresponsiveServerEndsAtTheContextDeadline(t *testing.T) {
	t.Parallel()
	d, err := NewLDAP("corp", LDAPConfig{
		URL: "ldap://" + blackHole(t), BaseDN: "dc=example,dc=test",
		BindDN: "cn=gateway,dc=example,dc=test", BindPassword: "x", Timeout: 10 * time.Second,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = d.Lookup(ctx, "carol")
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup against a server that never answers: error = %v, want a timeout", err)
	}
	if elapsed := time.Since(start); elapsed > 1500*time.Millisecond {
		t.Errorf("Lookup took %s; the 300ms context deadline should cap the 10s timeout", elapsed)
	}
}

func TestLDAPLookupWithCancelledContextFails(t *testing.T) {
	t.Parallel()
	d := newTestLDAP(t, slapd.Start(t), nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.Lookup(ctx, "carol"); !errors.Is(err, context.Canceled) {
		t.Errorf("Lookup with a cancelled context: error = %v, want context.Canceled", err)
	}
}

// TestDirectoryLookupFailsClosedWhenAnEarlierDirectoryIsDown: with LDAP
// first and down, a local "alice" must not get the login, since LDAP may
// know another alice; the outage is reported. A directory that answers
// "not found" still lets the search move on.
func TestDirectoryLookupFailsClosedWhenAnEarlierDirectoryIsDown(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t)
	down := newTestLDAP(t, s, func(c *LDAPConfig) { c.Timeout = time.Second })
	s.Stop()
	local, err := NewLocal("staff", []LocalUser{{Username: "alice", Email: "alice@example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	var failed []string
	id, err := Lookup(context.Background(), []Directory{down, local}, "alice", func(d Directory, err error) { failed = append(failed, d.Name()) })
	if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"corp"`) {
		t.Fatalf("Lookup(alice) with the first directory down = %+v, %v; want corp's failure, not the local namesake", id, err)
	}
	if len(failed) != 1 || failed[0] != "corp" {
		t.Errorf("the outage of corp should be reported; failed = %v", failed)
	}
	// Local first: its alice is found without asking LDAP at all.
	if id, err := Lookup(context.Background(), []Directory{local, down}, "alice", nil); err != nil || id.Directory != "staff" {
		t.Errorf("Lookup(alice) with the local directory first = %+v, %v; want the local alice", id, err)
	}
	// Local first and not knowing carol: LDAP's outage decides.
	if _, err := Lookup(context.Background(), []Directory{local, down}, "carol", nil); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup(carol) with LDAP down after a local miss: error = %v; want the LDAP failure, since carol may be in LDAP", err)
	}
}

func TestLDAPLookupRedialsWhenAPooledConnectionWasClosed(t *testing.T) {
	t.Parallel()
	d := newTestLDAP(t, slapd.Start(t), nil)
	mustLookup(t, d, "carol")
	d.pool.mu.Lock()
	idle := slices.Clone(d.pool.idle)
	d.pool.mu.Unlock()
	if len(idle) != 1 {
		t.Fatalf("after one lookup the pool holds %d idle connections, want 1", len(idle))
	}
	idle[0].Close()
	if id := mustLookup(t, d, "carol"); id.Username != "carol" {
		t.Errorf("lookup after the pooled connection closed found %q", id.Username)
	}
}

func TestLDAPLookupSucceedsAfterTheServerRestarts(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t)
	d := newTestLDAP(t, s, func(c *LDAPConfig) { c.PoolSize = 2 })
	mustLookup(t, d, "carol")
	s.Restart(t)
	for i := range 3 {
		if id := mustLookup(t, d, "dave"); id.ManagerEmail != "erin@example.test" {
			t.Errorf("lookup %d after restart: manager email %q", i, id.ManagerEmail)
		}
	}
}

func TestPoolRetriesABrokenPooledConnectionOnceOnAFreshOne(t *testing.T) {
	t.Parallel()
	d := newTestLDAP(t, slapd.Start(t), nil)
	mustLookup(t, d, "carol") // leaves one idle connection
	var calls int
	var conns []*ldap.Conn
	err := d.pool.do(context.Background(), time.Second, func(c *ldap.Conn, _ time.Duration) error {
		calls++
		conns = append(conns, c)
		if calls == 1 {
			return ldap.NewError(ldap.ErrorNetwork, errors.New("connection reset"))
		}
		return nil
	})
	if err != nil || calls != 2 || conns[0] == conns[1] {
		t.Errorf("network error on a pooled connection: err %v, %d calls; want success on a second, new connection", err, calls)
	}
	calls = 0
	err = d.pool.do(context.Background(), time.Second, func(*ldap.Conn, time.Duration) error {
		calls++
		return ldap.NewError(ldap.ErrorNetwork, errors.New("connection reset"))
	})
	if err == nil || calls != 2 {
		t.Errorf("network errors on every connection: err %v, %d calls; want an error after exactly one retry", err, calls)
	}
	// The failed connections were dropped: the next lookup dials afresh.
	mustLookup(t, d, "carol")
}

func TestPoolDoesNotRetryAnErrorTheServerAnswered(t *testing.T) {
	t.Parallel()
	d := newTestLDAP(t, slapd.Start(t), nil)
	mustLookup(t, d, "carol")
	var calls int
	err := d.pool.do(context.Background(), time.Second, func(*ldap.Conn, time.Duration) error {
		calls++
		return ldap.NewError(ldap.LDAPResultUnwillingToPerform, errors.New("no"))
	})
	if err == nil || calls != 1 {
		t.Errorf("server error: err %v, %d calls; want the error after one call", err, calls)
	}
	d.pool.mu.Lock()
	idle := len(d.pool.idle)
	d.pool.mu.Unlock()
	if idle != 1 {
		t.Errorf("after a server error the pool holds %d idle connections, want the one that answered", idle)
	}
}

func TestLDAPConcurrentLookupsShareAtMostPoolSizeConnections(t *testing.T) {
	t.Parallel()
	d := newTestLDAP(t, slapd.Start(t), func(c *LDAPConfig) { c.PoolSize = 3 })
	users := map[string]string{"carol": "dave@example.test", "dave": "erin@example.test", "erin": "", "grace": ""}
	var wg sync.WaitGroup
	var failures atomic.Int32
	for g := range 20 {
		wg.Go(func() {
			for i := range 10 {
				for u, mgr := range users {
					id, err := d.Lookup(context.Background(), u)
					if err != nil || id.Username != u || id.ManagerEmail != mgr {
						failures.Add(1)
						t.Errorf("goroutine %d, round %d: Lookup(%s) = %+v, %v", g, i, u, id, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	d.pool.mu.Lock()
	idle := len(d.pool.idle)
	d.pool.mu.Unlock()
	if idle > 3 {
		t.Errorf("the pool keeps %d connections, more than pool_size 3", idle)
	}
}

func TestLDAPLookupAfterCloseFails(t *testing.T) {
	t.Parallel()
	d := newTestLDAP(t, slapd.Start(t), nil)
	mustLookup(t, d, "carol")
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Lookup(context.Background(), "carol"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup after Close: error = %v, want a failure", err)
	}
}

func TestNewLDAPAppliesDefaultsWithoutConnecting(t *testing.T) {
	t.Parallel()
	d, err := NewLDAP("corp", LDAPConfig{URL: "ldaps://" + closedPort(t), BaseDN: "dc=example,dc=test"}, nil)
	if err != nil {
		t.Fatalf("NewLDAP with an unreachable server: %v; it must not connect", err)
	}
	defer d.Close()
	c := d.cfg
	got := []any{c.UserFilter, c.UsernameAttribute, c.MailAttribute, c.ManagerAttribute, c.NameAttribute, c.DepartmentAttribute, c.Timeout, c.PoolSize}
	want := []any{"(|(uid={input})(mail={input}))", "uid", "mail", "manager", "cn", "departmentNumber", 5 * time.Second, 4}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("defaults = %v, want %v", got, want)
	}
	if d.pool.dialer.tls.ServerName != "127.0.0.1" || d.pool.dialer.tls.MinVersion != tls.VersionTLS12 || d.pool.dialer.tls.InsecureSkipVerify {
		t.Errorf("TLS config = %+v, want ServerName from the URL, TLS 1.2+, verification on", d.pool.dialer.tls)
	}
}

func TestNewLDAPRejectsInvalidConfigNamingTheField(t *testing.T) {
	t.Parallel()
	valid := func() LDAPConfig {
		return LDAPConfig{URL: "ldaps://ldap.example.com", BaseDN: "dc=example,dc=com", BindDN: "cn=svc,dc=example,dc=com", BindPassword: "pw"}
	}
	tests := []struct {
		name   string
		change func(*LDAPConfig)
		want   string
	}{
		{"missing url", func(c *LDAPConfig) { c.URL = "" }, "url: required"},
		{"http url", func(c *LDAPConfig) { c.URL = "http://ldap.example.com" }, "url: scheme must be ldap:// or ldaps://"},
		{"ldapi url", func(c *LDAPConfig) { c.URL = "ldapi:///var/run/slapd/ldapi" }, "url: scheme must be"},
		{"url without host", func(c *LDAPConfig) { c.URL = "ldap://" }, "url: "},
		{"url with a DN path", func(c *LDAPConfig) { c.URL = "ldap://h/dc=example,dc=com" }, "url: "},
		{"unparsable url", func(c *LDAPConfig) { c.URL = "ldap://h:port" }, "url: "},
		{"start_tls on ldaps", func(c *LDAPConfig) { c.StartTLS = true }, "start_tls: "},
		{"plain ldap to a remote host", func(c *LDAPConfig) { c.URL = "ldap://ldap.example.com:389" }, `url: "ldap://ldap.example.com:389" sends the bind password and every lookup in clear text; use ldaps://ldap.example.com or set start_tls (plain ldap:// is allowed only for loopback hosts such as localhost)`},
		{"plain ldap to a private ip", func(c *LDAPConfig) { c.URL = "ldap://10.0.0.5" }, "url: "},
		{"plain ldap to a name that merely starts with localhost", func(c *LDAPConfig) { c.URL = "ldap://localhost.example.com" }, "url: "},
		{"bind_dn without password", func(c *LDAPConfig) { c.BindPassword = "" }, "bind_password: required with bind_dn"},
		{"password without bind_dn", func(c *LDAPConfig) { c.BindDN = "" }, "bind_dn: required with bind_password"},
		{"bad bind_dn", func(c *LDAPConfig) { c.BindDN = "not a dn" }, "bind_dn: "},
		{"missing base_dn", func(c *LDAPConfig) { c.BaseDN = " " }, "base_dn: required"},
		{"bad base_dn", func(c *LDAPConfig) { c.BaseDN = "dc=example,,=" }, "base_dn: "},
		{"filter without input", func(c *LDAPConfig) { c.UserFilter = "(uid=carol)" }, "user_filter: "},
		{"unbalanced filter", func(c *LDAPConfig) { c.UserFilter = "(|(uid={input})(mail={input})" }, "user_filter: "},
		{"filter not a filter", func(c *LDAPConfig) { c.UserFilter = "uid={input}" }, "user_filter: "},
		{"bad username_attribute", func(c *LDAPConfig) { c.UsernameAttribute = "u id" }, "username_attribute: "},
		{"bad mail_attribute", func(c *LDAPConfig) { c.MailAttribute = "(mail)" }, "mail_attribute: "},
		{"bad manager_attribute", func(c *LDAPConfig) { c.ManagerAttribute = "-x" }, "manager_attribute: "},
		{"bad name_attribute", func(c *LDAPConfig) { c.NameAttribute = "c n" }, "name_attribute: "},
		{"bad department_attribute", func(c *LDAPConfig) { c.DepartmentAttribute = "*" }, "department_attribute: "},
		{"bad attributes entry", func(c *LDAPConfig) { c.Attributes = []string{"title", ""} }, "attributes: "},
		{"negative timeout", func(c *LDAPConfig) { c.Timeout = -time.Second }, "timeout: "},
		{"negative pool_size", func(c *LDAPConfig) { c.PoolSize = -1 }, "pool_size: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid()
			tt.change(&cfg)
			_, err := NewLDAP("corp", cfg, nil)
			if err == nil {
				t.Fatalf("NewLDAP accepted %+v", cfg)
			}
			if !strings.HasPrefix(err.Error(), `directory "corp": `+tt.want) {
				t.Errorf("error = %q, want it to start with %q", err, `directory "corp": `+tt.want)
			}
		})
	}
	if _, err := NewLDAP("corp", valid(), nil); err != nil {
		t.Errorf("the valid base config was rejected: %v", err)
	}
}

// TestNewLDAPAcceptsPlainLDAPOnlyWithStartTLSOrToLoopback: ldap:// is
// fine once StartTLS protects it, and without it for the loopback hosts
// that only this machine can answer.
func TestNewLDAPAcceptsPlainLDAPOnlyWithStartTLSOrToLoopback(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url      string
		startTLS bool
	}{
		{"ldap://ldap.example.com", true},
		{"ldap://127.0.0.1:389", false},
		{"ldap://localhost", false},
		{"ldap://dir.localhost:3389", false},
		{"ldap://[::1]:389", false},
	} {
		d, err := NewLDAP("corp", LDAPConfig{URL: tc.url, StartTLS: tc.startTLS, BaseDN: "dc=example,dc=com"}, nil)
		if err != nil {
			t.Errorf("NewLDAP(%s, start_tls %v) refused it: %v", tc.url, tc.startTLS, err)
			continue
		}
		d.Close()
	}
}

func BenchmarkLDAPLookup(b *testing.B) {
	d := newTestLDAP(b, slapd.Start(b), nil)
	ctx := context.Background()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := d.Lookup(ctx, "dave"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func TestLDAPCheckBindsAndReadsTheBaseDN(t *testing.T) {
	t.Parallel()
	d := newTestLDAP(t, slapd.Start(t), nil)
	if err := d.Check(context.Background()); err != nil {
		t.Errorf("Check against a working directory: %v", err)
	}
}

func TestLDAPCheckFailsOnAWrongPasswordOrAMissingBaseDN(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t)
	wrong := newTestLDAP(t, s, func(c *LDAPConfig) { c.BindPassword = "wrong" })
	if err := wrong.Check(context.Background()); !ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
		t.Errorf("Check with a wrong bind password: error = %v, want invalid credentials (49)", err)
	}
	missing := newTestLDAP(t, s, func(c *LDAPConfig) { c.BaseDN = "ou=nowhere,dc=example,dc=test" })
	if err := missing.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "base_dn") {
		t.Errorf("Check under a base DN that does not exist: error = %v, want an error naming base_dn", err)
	}
}

func TestLDAPListReturnsUsernamesUpToTheLimit(t *testing.T) {
	t.Parallel()
	d := newTestLDAP(t, slapd.Start(t), nil)
	all, err := d.List(context.Background(), 100)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for _, want := range []string{"a*b(c)", "carol", "dave", "frank", "ops1", "ops2"} {
		if !slices.Contains(all, want) {
			t.Errorf("List = %v, lacks fixture user %q", all, want)
		}
	}
	if !slices.IsSorted(all) {
		t.Errorf("List = %v, want it sorted", all)
	}
	if slices.Contains(all, "gateway") {
		t.Errorf("List = %v includes the service account, which has no uid and is outside the people base", all)
	}
	some, err := d.List(context.Background(), 3)
	if err != nil || len(some) != 3 {
		t.Errorf("List with limit 3 = %v, %v; want 3 usernames and no error", some, err)
	}
}

func TestLDAPLookupOfASharedMailIsErrAmbiguous(t *testing.T) {
	t.Parallel()
	d := newTestLDAP(t, slapd.Start(t), nil)
	if _, err := d.Lookup(context.Background(), "ops@example.test"); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("Lookup of a mail two entries share: error = %v, want ErrAmbiguous", err)
	}
}
