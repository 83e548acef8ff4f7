package mailer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"net/mail"
	"net/textproto"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/mailauth/caddy-mailauth/internal/loopback"
)

// TLSMode says how the connection to a mail server is protected.
type TLSMode string

const (
	// TLSStartTLS connects in plain text and upgrades with STARTTLS; a server
	// that does not offer STARTTLS is refused. It is the default.
	TLSStartTLS TLSMode = "starttls"
	// TLSImplicit speaks TLS from the first byte (SMTPS, usually port 465).
	TLSImplicit TLSMode = "implicit"
	// TLSOpportunistic upgrades with STARTTLS when the server offers it and
	// sends in plain text when it does not. Someone on the path can strip
	// the offer, so it is accepted only for a loopback host or with
	// ServerConfig.InsecureTLSOK; prefer TLSStartTLS.
	TLSOpportunistic TLSMode = "opportunistic"
	// TLSNone sends in plain text. Because the mail carries sign-in links,
	// it is accepted only for a loopback host or with
	// ServerConfig.InsecureTLSOK.
	TLSNone TLSMode = "none"
)

// AuthMechanism is the SMTP AUTH mechanism used when a username is set.
type AuthMechanism string

const (
	// AuthAuto picks the strongest mechanism the server offers and never a
	// plain-text one over an unencrypted connection. It is the default.
	AuthAuto AuthMechanism = "auto"
	// AuthPlain is SASL PLAIN (RFC 4616).
	AuthPlain AuthMechanism = "plain"
	// AuthLogin is the LOGIN mechanism that many older servers offer.
	AuthLogin AuthMechanism = "login"
	// AuthCRAMMD5 is CRAM-MD5 (RFC 2195).
	AuthCRAMMD5 AuthMechanism = "cram-md5"
)

// authTypes maps each mechanism to go-mail's name for it.
var authTypes = map[AuthMechanism]gomail.SMTPAuthType{
	AuthAuto:    gomail.SMTPAuthAutoDiscover,
	AuthPlain:   gomail.SMTPAuthPlain,
	AuthLogin:   gomail.SMTPAuthLogin,
	AuthCRAMMD5: gomail.SMTPAuthCramMD5,
}

// ConfigError is a problem in one field of a ServerConfig. Field is the
// configuration name of the field ("host", "tls", "auth"...), so that a
// config adapter can point at the line that sets it.
type ConfigError struct {
	// Server is the server's name.
	Server string
	// Field names the offending setting.
	Field string
	// Reason says what is wrong with it.
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("mailer: server %q: %s: %s", e.Server, e.Field, e.Reason)
}

// DefaultTimeout bounds one connection to one server (dial, TLS, auth and
// the whole SMTP transaction) when ServerConfig.Timeout is zero.
const DefaultTimeout = 15 * time.Second

// ErrPermanent marks a delivery error that no retry can fix: the server
// refused the message with a 5xx reply, or the message itself is unusable.
// Sender implementations wrap it (fmt.Errorf("...: %w", ErrPermanent)) so the
// outbox stops retrying; any other error is treated as temporary.
var ErrPermanent = errors.New("permanent failure")

// ServerConfig is one SMTP server that mail can leave through.
type ServerConfig struct {
	// Name identifies the server in Message.Servers, logs and events. When
	// empty, NewSMTP uses the server's key in its map.
	Name string
	// Host is the server's host name or IP address. Required.
	Host string
	// Port defaults by TLS mode: 587 for starttls, 465 for implicit, 25 for none.
	Port int
	// TLS is the connection security; the default is TLSStartTLS.
	TLS TLSMode
	// InsecureTLSOK accepts TLSOpportunistic and TLSNone for a host that
	// is not loopback, although mail through it, sign-in links and all,
	// may then cross the network in clear text: for a relay reached over
	// a network that is trusted end to end. It is refused with the modes
	// that always encrypt. The default is false.
	InsecureTLSOK bool
	// Username and Password enable SMTP AUTH when Username is set.
	Username string
	Password string
	// Auth is the AUTH mechanism; the default is AuthAuto. It needs a
	// Username.
	Auth AuthMechanism
	// HELO is the name this client gives in EHLO/HELO; the default is the
	// machine's host name. Some relays only accept a registered name.
	HELO string
	// From is the sender, as an RFC 5322 address ("Gateway <noreply@example.com>").
	// Its domain also names the Message-ID.
	From string
	// Timeout bounds one delivery attempt through this server; the default
	// is DefaultTimeout.
	Timeout time.Duration
	// Connections is how many SMTP sessions to this server may be open at
	// once, each carrying one message after another; the default is
	// DefaultConnections. Keep it within the relay's limit of connections
	// per client, divided by the instances sharing the relay.
	Connections int
	// IdleTimeout closes a session that carried no message for this long;
	// the default is DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Rate caps how many messages this server is given per window, on
	// this instance; the zero Rate is no limit. Messages over it go to the
	// next server of the message, or wait, without counting an attempt.
	Rate Rate
	// RootCAs verifies the server's certificate; nil means the system roots.
	// Set it for a relay with a certificate from a private CA: certificate
	// checks are never skipped.
	RootCAs *x509.CertPool
}

// defaultPorts holds the port each TLS mode uses when none is configured.
var defaultPorts = map[TLSMode]int{TLSStartTLS: 587, TLSImplicit: 465, TLSOpportunistic: 587, TLSNone: 25}

// withDefaults fills in what Validate documents as defaults. Validate has a
// value receiver (it only checks), so defaults are applied on a copy.
func (c ServerConfig) withDefaults() ServerConfig {
	if c.TLS == "" {
		c.TLS = TLSStartTLS
	}
	if c.Port == 0 {
		c.Port = defaultPorts[c.TLS]
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Auth == "" {
		c.Auth = AuthAuto
	}
	if c.Connections == 0 {
		c.Connections = DefaultConnections
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	return c
}

// Validate reports the first problem in the configuration as a
// *ConfigError naming the offending field, so that it can be shown at config
// load. Zero values that have defaults are accepted.
func (c ServerConfig) Validate() error {
	auth := c.Auth
	c = c.withDefaults()
	fail := func(field, format string, args ...any) error {
		return &ConfigError{Server: c.Name, Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	if strings.TrimSpace(c.Host) == "" {
		return fail("host", "is required")
	}
	if strings.ContainsAny(c.Host, " /:@") && net.ParseIP(c.Host) == nil {
		return fail("host", "%q is not a host name or IP address", c.Host)
	}
	if _, ok := defaultPorts[c.TLS]; !ok {
		return fail("tls", "%q is not one of starttls, implicit, opportunistic, none", c.TLS)
	}
	switch {
	case c.TLS == TLSNone && !c.InsecureTLSOK && !loopback.Host(c.Host):
		return fail("tls", "none sends sign-in links in clear text to %q; use starttls or implicit, or set insecure_tls_ok if every network between here and that host is trusted (none is allowed without it only for loopback hosts such as localhost)", c.Host)
	case c.TLS == TLSOpportunistic && !c.InsecureTLSOK && !loopback.Host(c.Host):
		return fail("tls", "opportunistic sends sign-in links in clear text to %q whenever STARTTLS is not offered, and anyone on the path can remove the offer; use starttls or implicit, or set insecure_tls_ok if every network between here and that host is trusted (opportunistic is allowed without it only for loopback hosts such as localhost)", c.Host)
	case c.InsecureTLSOK && c.TLS != TLSNone && c.TLS != TLSOpportunistic:
		return fail("insecure_tls_ok", "has no effect with tls %s, which always encrypts; remove it", c.TLS)
	}
	if c.Port < 1 || c.Port > 65535 {
		return fail("port", "%d is out of range 1-65535", c.Port)
	}
	if c.From == "" {
		return fail("from", "is required")
	}
	if _, err := fromDomain(c.From); err != nil {
		return fail("from", "%v", err)
	}
	if c.Username == "" && c.Password != "" {
		return fail("username", "is required when a password is set")
	}
	if c.Username != "" && c.Password == "" {
		// An unset {env.X} expands to nothing; failing here beats an
		// authentication error on every mail.
		return fail("password", "is empty while username %q is set", c.Username)
	}
	if _, ok := authTypes[c.Auth]; !ok {
		return fail("auth", "%q is not one of plain, login, cram-md5, auto", c.Auth)
	}
	if auth != "" && c.Username == "" {
		return fail("auth", "%s needs a username", auth)
	}
	if strings.ContainsFunc(c.HELO, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		// It goes on the EHLO line as is; a space or line break would
		// change the command.
		return fail("helo", "%q must be one host name without spaces", c.HELO)
	}
	if c.Timeout < 0 {
		return fail("timeout", "%s is negative", c.Timeout)
	}
	if c.Connections < 1 || c.Connections > maxConnections {
		return fail("connections", "%d is out of range 1-%d", c.Connections, maxConnections)
	}
	if c.IdleTimeout < 0 {
		return fail("idle_timeout", "%s is negative", c.IdleTimeout)
	}
	if !c.Rate.IsZero() && (c.Rate.Messages < 1 || c.Rate.Per <= 0) {
		return fail("rate", "%s needs a positive number of messages per a positive window, such as 30/1m", c.Rate)
	}
	if c.Rate.Messages > maxRateMessages {
		return fail("rate", "%d messages per window is more than the %d it can track; use a shorter window", c.Rate.Messages, maxRateMessages)
	}
	return nil
}

// Bounds of what a ServerConfig may ask for: a relay gives a client a
// handful of connections, and each message of a rate's window costs a
// timestamp in memory.
const (
	maxConnections  = 100
	maxRateMessages = 100000
)

// fromDomain parses a From value and returns the domain of its address.
func fromDomain(from string) (string, error) {
	addr, err := mail.ParseAddress(from)
	if err != nil {
		return "", fmt.Errorf("%q is not an email address: %w", from, err)
	}
	at := strings.LastIndexByte(addr.Address, '@')
	if at < 0 || at == len(addr.Address)-1 {
		return "", fmt.Errorf("%q has no domain", from)
	}
	return addr.Address[at+1:], nil
}

// downFor is how long a server that could not be reached is tried after the
// healthy ones. Without it every message would wait out a dead primary's
// connect timeout before failing over.
const downFor = 30 * time.Second

// Backoff of a server that throttles (answers 421, or a 4.7.x status such
// as "4.7.0 too many connections" or "4.7.1 rate limit exceeded"): it is not
// tried at all for throttleBase, then twice as long after each further
// throttling reply, up to throttleMax, until it accepts a message again.
const (
	throttleBase = time.Second
	throttleMax  = 5 * time.Minute
)

// SMTP is a Sender that delivers through a set of named SMTP servers,
// trying a message's servers in order and failing over on temporary errors.
// Each server keeps a few sessions open (ServerConfig.Connections) and
// sends message after message on them, within its ServerConfig.Rate; a
// server that throttles is left alone for a while (a circuit breaker). It
// is safe for concurrent use; Close ends its sessions.
type SMTP struct {
	servers map[string]*smtpServer

	now func() time.Time
	// onThrottle, when set, is told each time a server starts being
	// backed off.
	onThrottle func(server string, until time.Time, err error)
	// onDial, when set, is told each time a connection is opened.
	onDial func(server string)

	mu        sync.Mutex
	downUntil map[string]time.Time
	// throttled holds the servers that are backed off: until when, and
	// the backoff that the next throttling reply doubles.
	throttled map[string]throttle
}

type throttle struct {
	until   time.Time
	backoff time.Duration
}

// smtpServer is one configured server with its go-mail client, its
// sessions and its rate.
type smtpServer struct {
	cfg    ServerConfig
	domain string
	pool   *sessionPool
	rate   *rateWindow // nil without a Rate
	dials  atomic.Uint64
}

// NewSMTP validates every server and prepares a client for each. It does no
// network I/O, so it is safe to call while provisioning a config.
func NewSMTP(cfgs map[string]ServerConfig) (*SMTP, error) {
	s := &SMTP{
		servers:   make(map[string]*smtpServer, len(cfgs)),
		now:       time.Now,
		downUntil: make(map[string]time.Time),
		throttled: make(map[string]throttle),
	}
	// Sorted so that the error for a broken config is the same on every load.
	names := make([]string, 0, len(cfgs))
	for name := range cfgs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		cfg := cfgs[name]
		if cfg.Name == "" {
			cfg.Name = name
		}
		if cfg.Name != name {
			return nil, fmt.Errorf("mailer: server %q: name: %q differs from its key", name, cfg.Name)
		}
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
		cfg = cfg.withDefaults()
		client, err := newClient(cfg)
		if err != nil {
			return nil, fmt.Errorf("mailer: smtp %s: %w", name, err)
		}
		domain, _ := fromDomain(cfg.From) // checked by Validate
		srv := &smtpServer{cfg: cfg, domain: domain, rate: newRateWindow(cfg.Rate)}
		srv.pool = newSessionPool(client, cfg.Connections, cfg.IdleTimeout, func() {
			srv.dials.Add(1)
			if s.onDial != nil {
				s.onDial(name)
			}
		})
		s.servers[name] = srv
	}
	return s, nil
}

// OnThrottle installs a function told whenever a server starts being
// backed off after a throttling reply; call it before the first Send.
func (s *SMTP) OnThrottle(f func(server string, until time.Time, err error)) { s.onThrottle = f }

// OnDial installs a function told each time a connection to a server is
// opened; call it before the first Send.
func (s *SMTP) OnDial(f func(server string)) { s.onDial = f }

// Dials reports how many connections each server has had opened to it.
func (s *SMTP) Dials() map[string]uint64 {
	out := make(map[string]uint64, len(s.servers))
	for name, srv := range s.servers {
		out[name] = srv.dials.Load()
	}
	return out
}

// Close ends the open sessions with a QUIT. A Send after Close fails.
func (s *SMTP) Close() error {
	for _, srv := range s.servers {
		srv.pool.close()
	}
	return nil
}

// DeferredError is returned by SMTP.Send when no server of the message
// can take it now: each is at its Rate or backed off after throttling,
// and none failed in a way that counts against the message. Until is when
// the first of them is free again. It is temporary; the outbox holds the
// message until then without counting an attempt.
type DeferredError struct {
	Until time.Time
	// Err holds the throttling replies of this attempt, if any.
	Err error
}

func (e *DeferredError) Error() string {
	msg := "mailer: every mail server of the message is at its rate limit or backed off until " + e.Until.Format(time.RFC3339Nano)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *DeferredError) Unwrap() error { return e.Err }

// Send delivers m through the first of m.Servers that accepts it and
// returns that server's name. A server that cannot be reached or answers
// with a temporary (4xx) error is skipped for the next one; a permanent
// refusal is returned at once, wrapping ErrPermanent, because another server
// would refuse the same message. Servers that failed recently are tried
// after the others, and only when every healthy one failed too: a healthy
// server that is merely at its Rate, or one backed off after throttling,
// makes Send return a *DeferredError for the time it frees instead.
func (s *SMTP) Send(ctx context.Context, m *Message) (string, error) {
	up, down, err := s.order(m)
	if err != nil {
		return "", err
	}
	var (
		errs, throttles []error
		freeAt          time.Time // when the first busy server frees; zero if none is busy
	)
	busy := func(at time.Time) {
		if freeAt.IsZero() || at.Before(freeAt) {
			freeAt = at
		}
	}
	try := func(group []*smtpServer) (string, error, bool) {
		for _, srv := range group {
			if err := ctx.Err(); err != nil {
				errs = append(errs, err)
				return "", nil, false
			}
			if until, ok := s.backedOff(srv.cfg.Name); ok {
				busy(until)
				continue
			}
			slot, ok, at := srv.rate.reserve(s.now())
			if !ok {
				if at.IsZero() {
					// Every slot is in flight; one will finish within a timeout.
					at = s.now().Add(srv.cfg.Timeout)
				}
				busy(at)
				continue
			}
			reached, err := s.sendVia(ctx, srv, m)
			srv.rate.finish(slot, s.now(), reached)
			switch {
			case err == nil:
				s.markUp(srv.cfg.Name)
				return srv.cfg.Name, nil, true
			case errors.Is(err, ErrPermanent):
				return srv.cfg.Name, err, true
			case isThrottle(err):
				busy(s.throttle(srv.cfg.Name, err))
				throttles = append(throttles, err)
			default:
				s.markDown(srv.cfg.Name)
				errs = append(errs, err)
			}
		}
		return "", nil, false
	}
	if name, err, done := try(up); done {
		return name, err
	}
	if freeAt.IsZero() && ctx.Err() == nil {
		if name, err, done := try(down); done {
			return name, err
		}
	}
	if !freeAt.IsZero() && ctx.Err() == nil {
		return "", &DeferredError{Until: freeAt, Err: errors.Join(append(throttles, errs...)...)}
	}
	return "", errors.Join(append(errs, throttles...)...)
}

// order resolves m.Servers to configured servers, split into the healthy
// and the recently failed, each in the message's order of preference.
func (s *SMTP) order(m *Message) (up, down []*smtpServer, err error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var unknown []string
	for _, name := range m.Servers {
		srv, ok := s.servers[name]
		if !ok {
			// A reload may have renamed a server while the message waited;
			// the others in its list can still carry it.
			unknown = append(unknown, name)
			continue
		}
		if now.Before(s.downUntil[name]) {
			down = append(down, srv)
		} else {
			up = append(up, srv)
		}
	}
	if len(up)+len(down) == 0 {
		return nil, nil, fmt.Errorf("mailer: message %s: no configured mail server among %q: %w", m.ID, unknown, ErrPermanent)
	}
	return up, down, nil
}

func (s *SMTP) markDown(name string) {
	s.mu.Lock()
	s.downUntil[name] = s.now().Add(downFor)
	s.mu.Unlock()
}

// markUp forgets past failures and throttling of a server that just took
// a message.
func (s *SMTP) markUp(name string) {
	s.mu.Lock()
	delete(s.downUntil, name)
	delete(s.throttled, name)
	s.mu.Unlock()
}

// backedOff reports whether a server is being left alone after throttling,
// and until when.
func (s *SMTP) backedOff(name string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.throttled[name]
	if !ok || !s.now().Before(t.until) {
		return time.Time{}, false
	}
	return t.until, true
}

// throttle backs a server off after a throttling reply and returns until
// when. Replies that arrive while it is backed off already (other messages
// were in flight) do not lengthen the backoff.
func (s *SMTP) throttle(name string, err error) time.Time {
	now := s.now()
	s.mu.Lock()
	t, ok := s.throttled[name]
	if ok && now.Before(t.until) {
		s.mu.Unlock()
		return t.until
	}
	switch {
	case !ok:
		t.backoff = throttleBase
	default:
		t.backoff = min(2*t.backoff, throttleMax)
	}
	t.until = now.Add(t.backoff)
	s.throttled[name] = t
	s.mu.Unlock()
	if s.onThrottle != nil {
		s.onThrottle(name, t.until, err)
	}
	return t.until
}

// Capacity reports how many messages could start now without waiting on a
// rate or a backoff, summed over the servers, and when the next one could
// if none can. The outbox claims no more than that, so that in a burst
// above the servers' rates the backlog waits in the queue rather than
// being claimed and put back over and over.
func (s *SMTP) Capacity(now time.Time) (n int, next time.Time) {
	for name, srv := range s.servers {
		if until, ok := s.backedOff(name); ok {
			if next.IsZero() || until.Before(next) {
				next = until
			}
			continue
		}
		if srv.rate == nil {
			return math.MaxInt, time.Time{}
		}
		free, at := srv.rate.free(now)
		n += free
		if free == 0 && !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	if n > 0 {
		next = time.Time{}
	}
	return n, next
}

// sendVia makes one delivery attempt through one server and classifies the
// result: nil, an error wrapping ErrPermanent, or a temporary error. Every
// error is a *serverError, which keeps the server's name and reply code for
// the audit log. reached reports whether the server got as far as being
// asked to take the message, which counts against its rate.
func (s *SMTP) sendVia(ctx context.Context, srv *smtpServer, m *Message) (reached bool, err error) {
	name := srv.cfg.Name
	msg, err := buildMsg(srv, m, s.now())
	if err != nil {
		return false, &serverError{server: name, err: fmt.Errorf("%w: %w", ErrPermanent, err)}
	}
	ctx, cancel := context.WithTimeout(ctx, srv.cfg.Timeout)
	defer cancel()
	reached, err = srv.pool.send(ctx, msg)
	if err == nil || msg.IsDelivered() {
		// A failing RSET after the server accepted the data must not count
		// as a failure: a retry would deliver a second login mail.
		return true, nil
	}
	serr := &serverError{server: name, err: err}
	var sendErr *gomail.SendError
	var reply *textproto.Error
	switch {
	case errors.As(err, &sendErr):
		serr.code = sendErr.ErrorCode()
		serr.status = sendErr.EnhancedStatusCode()
		if isPermanent(sendErr) {
			serr.err = fmt.Errorf("%w: %w", ErrPermanent, err)
		}
	case errors.As(err, &reply):
		// Refused while connecting: the greeting, EHLO, STARTTLS or AUTH.
		serr.code = reply.Code
	}
	if serr.status == "" {
		serr.status = enhancedStatus.FindString(err.Error())
	}
	// Everything else is a dial, TLS, EHLO or AUTH failure (no SendError), a
	// 4xx reply, or a connection lost mid-transaction: another server or a
	// later attempt may succeed.
	return reached, serr
}

// enhancedStatus finds an RFC 3463 status code in a reply's text, for
// servers that use them without announcing ENHANCEDSTATUSCODES, and for
// replies before EHLO, where nothing can be announced.
var enhancedStatus = regexp.MustCompile(`\b[245]\.\d{1,3}\.\d{1,3}\b`)

// isThrottle reports whether err is a server saying "not so fast": 421
// (service not available, closing: the usual answer to too many
// connections) or any temporary reply with a 4.7.x status (RFC 3463's
// security or policy class, where relays put rate limits).
func isThrottle(err error) bool {
	se := lastServerError(err)
	if se == nil || errors.Is(err, ErrPermanent) {
		return false
	}
	return se.code == 421 || (se.code >= 400 && se.code < 500 && strings.HasPrefix(se.status, "4.7."))
}

// newClient builds the go-mail client for a validated config.
func newClient(cfg ServerConfig, extra ...gomail.Option) (*gomail.Client, error) {
	opts := []gomail.Option{
		gomail.WithPort(cfg.Port),
		gomail.WithTimeout(cfg.Timeout),
		gomail.WithTLSConfig(&tls.Config{ServerName: cfg.Host, MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs}),
	}
	switch cfg.TLS {
	case TLSStartTLS:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	case TLSImplicit:
		opts = append(opts, gomail.WithSSL())
	case TLSOpportunistic:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSOpportunistic))
	case TLSNone:
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	}
	if cfg.HELO != "" {
		opts = append(opts, gomail.WithHELO(cfg.HELO))
	}
	if cfg.Username != "" {
		// Auto-discovery picks the strongest mechanism the server offers and
		// refuses plain-text mechanisms over an unencrypted connection.
		opts = append(opts,
			gomail.WithSMTPAuth(authTypes[cfg.Auth]),
			gomail.WithUsername(cfg.Username),
			gomail.WithPassword(cfg.Password),
		)
	}
	return gomail.NewClient(cfg.Host, append(opts, extra...)...)
}

// serverError is the failure of one attempt through one server.
type serverError struct {
	server string
	// code is the server's SMTP reply code, or 0 when it gave none (the
	// connection or TLS failed).
	code int
	// status is the RFC 3463 enhanced status ("4.7.0"), when the reply
	// had one.
	status string
	err    error
}

func (e *serverError) Error() string { return fmt.Sprintf("mailer: smtp %s: %v", e.server, e.err) }
func (e *serverError) Unwrap() error { return e.err }

// lastServerError finds the failure of the last server that err reports
// on: the one that decided the outcome. It walks errors.Join trees, which
// errors.As would search from the first server instead.
func lastServerError(err error) *serverError {
	switch e := err.(type) {
	case nil:
		return nil
	case *serverError:
		return e
	case interface{ Unwrap() []error }:
		list := e.Unwrap()
		for i := len(list) - 1; i >= 0; i-- {
			if se := lastServerError(list[i]); se != nil {
				return se
			}
		}
		return nil
	case interface{ Unwrap() error }:
		return lastServerError(e.Unwrap())
	}
	return nil
}

// isPermanent reports whether a send error is the server's final word on
// this message rather than a problem with the connection.
func isPermanent(e *gomail.SendError) bool {
	if e.IsTemp() {
		return false
	}
	switch e.Reason {
	case gomail.ErrGetSender, gomail.ErrGetRcpts, gomail.ErrNoUnencoded:
		return true
	}
	code := e.ErrorCode()
	return code >= 500 && code < 600
}

// buildMsg turns a Message into a go-mail message sent from srv. MIME
// encoding is go-mail's job; this only sets content and headers.
func buildMsg(srv *smtpServer, m *Message, now time.Time) (*gomail.Msg, error) {
	msg := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	if err := msg.From(srv.cfg.From); err != nil {
		return nil, fmt.Errorf("from: %w", err)
	}
	if err := msg.To(m.To); err != nil {
		return nil, fmt.Errorf("to: %w", err)
	}
	msg.Subject(m.Subject)
	msg.SetMessageIDWithValue(messageIDLocal(m.ID) + "@" + srv.domain)
	msg.SetDateWithValue(now)
	// RFC 3834: tells auto-responders (out-of-office) not to answer.
	msg.SetGenHeader(gomail.Header("Auto-Submitted"), "auto-generated")
	msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	if m.HTML != "" {
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	}
	return msg, nil
}

// messageIDLocal keeps the characters of id that are valid in a Message-ID's
// dot-atom left part, so that the header stays well-formed whatever ids the
// caller picks. The same id gives the same Message-ID on every retry, which
// lets receivers drop duplicates.
func messageIDLocal(id string) string {
	var b strings.Builder
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			strings.ContainsRune("!#$%&'*+-/=?^_`{|}~.", r):
			b.WriteRune(r)
		}
	}
	local := strings.Trim(b.String(), ".")
	if local == "" {
		local = "mailauth"
	}
	return local
}

// Interface guards
var _ Sender = (*SMTP)(nil)
