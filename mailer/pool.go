package mailer

import (
	"context"
	"errors"
	"sync"
	"time"

	gomail "github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"
)

// DefaultConnections is how many SMTP sessions one server gets at once
// when ServerConfig.Connections is zero: enough to overlap one message's
// round trips with another's, few enough for a relay that limits
// connections per client.
const DefaultConnections = 2

// DefaultIdleTimeout is how long an SMTP session may sit unused before it
// is closed, when ServerConfig.IdleTimeout is zero. Relays drop idle
// clients after a few minutes (RFC 5321 asks servers to wait 5); closing
// first, with a QUIT, saves an error on the next message.
const DefaultIdleTimeout = 30 * time.Second

// sessionPool keeps up to size open SMTP sessions to one server and lends
// them out one message at a time, so that a burst of mail costs one dial,
// one TLS handshake and one AUTH per session instead of per message. go-mail
// dials each session (DialToSMTPClientWithContext) and sends on it
// (SendWithSMTPClient, which checks the session with NOOP first and resets
// it with RSET after each message); this type only decides which session a
// message takes and when a session is closed.
type sessionPool struct {
	client *gomail.Client // the server's settings; holds no connection itself
	idle   time.Duration
	onDial func()

	// slots has one token per session that may be open or dialing; a
	// sender holds one for the whole message.
	slots chan struct{}

	mu      sync.Mutex
	open    []*session // idle sessions, most recently used last
	reaping bool       // a reap is scheduled
	closed  bool
}

// session is one open SMTP connection.
type session struct {
	conn     *smtp.Client
	lastUsed time.Time
}

func newSessionPool(client *gomail.Client, size int, idle time.Duration, onDial func()) *sessionPool {
	return &sessionPool{client: client, idle: idle, onDial: onDial, slots: make(chan struct{}, size)}
}

// errPoolClosed is returned once the SMTP sender has been closed.
var errPoolClosed = errors.New("mailer: mail server connections are closed")

// send delivers msg on an idle session, or on a new one when none is idle,
// waiting for a free slot as long as ctx allows. dialed reports whether a
// connection to the server was opened or reused, which is what a server
// counts against its rate; err is go-mail's. A session that was idle and
// turns out to be dead (NOOP fails: the server timed it out) is replaced
// once, since nothing was sent on it.
func (p *sessionPool) send(ctx context.Context, msg *gomail.Msg) (dialed bool, err error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-p.slots }()

	s, reused := p.take(), true
	for {
		if s == nil {
			reused = false
			if s, err = p.dial(ctx); err != nil {
				return false, err
			}
		}
		err = p.client.SendWithSMTPClient(s.conn, msg)
		var se *gomail.SendError
		if reused && errors.As(err, &se) && se.Reason == gomail.ErrConnCheck {
			// Dead before anything was sent: a stale session, not a
			// refusal. Drop it and try a fresh one.
			s.conn.Close()
			s = nil
			continue
		}
		break
	}
	if err != nil && !sessionUsable(err) {
		// The reply or the lack of one leaves the session in an unknown
		// state (421 closes it; a timeout may leave a command pending).
		s.conn.Close()
		return true, err
	}
	p.put(s)
	return true, err
}

// sessionUsable reports whether a session can carry another message after
// a failed one: the server refused the message with a reply (other than
// 421, which closes the connection) and go-mail reset the transaction.
func sessionUsable(err error) bool {
	var se *gomail.SendError
	if !errors.As(err, &se) {
		return false
	}
	switch se.Reason {
	case gomail.ErrSMTPMailFrom, gomail.ErrSMTPRcptTo:
		// go-mail sent RSET after these; a code means the server answered.
		return se.ErrorCode() != 0 && se.ErrorCode() != 421
	}
	return false
}

// take returns the most recently used idle session, or nil. Using the
// freshest keeps the others idle, so that the reaper closes sessions a
// lull no longer needs.
func (p *sessionPool) take() *session {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.open); n > 0 {
		s := p.open[n-1]
		p.open = p.open[:n-1]
		return s
	}
	return nil
}

func (p *sessionPool) dial(ctx context.Context) (*session, error) {
	if p.isClosed() {
		return nil, errPoolClosed
	}
	if p.onDial != nil {
		p.onDial()
	}
	conn, err := p.client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		return nil, err
	}
	return &session{conn: conn}, nil
}

// put returns a session to the idle list and makes sure that a reap will
// close it if it stays idle.
func (p *sessionPool) put(s *session) {
	s.lastUsed = time.Now()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.quit(s)
		return
	}
	p.open = append(p.open, s)
	schedule := !p.reaping
	p.reaping = true
	p.mu.Unlock()
	if schedule {
		time.AfterFunc(p.idle, p.reap)
	}
}

// reap closes the sessions idle for p.idle or longer and schedules itself
// again while any stay open.
func (p *sessionPool) reap() {
	now := time.Now()
	p.mu.Lock()
	var stale []*session
	keep := p.open[:0]
	for _, s := range p.open {
		if now.Sub(s.lastUsed) >= p.idle {
			stale = append(stale, s)
		} else {
			keep = append(keep, s)
		}
	}
	clear(p.open[len(keep):])
	p.open = keep
	var next time.Duration
	if len(keep) > 0 {
		// The oldest idle session is first.
		next = p.idle - now.Sub(keep[0].lastUsed)
	}
	p.reaping = len(keep) > 0
	p.mu.Unlock()
	for _, s := range stale {
		p.quit(s)
	}
	if next > 0 {
		time.AfterFunc(next, p.reap)
	}
}

// quit ends a session politely (QUIT), and closes the connection whatever
// the server says.
func (p *sessionPool) quit(s *session) {
	if err := p.client.CloseWithSMTPClient(s.conn); err != nil {
		s.conn.Close()
	}
}

func (p *sessionPool) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// close quits the idle sessions; sessions in use are quit when their
// message is done.
func (p *sessionPool) close() {
	p.mu.Lock()
	p.closed = true
	open := p.open
	p.open = nil
	p.mu.Unlock()
	for _, s := range open {
		p.quit(s)
	}
}

// idleCount is how many sessions are open and unused.
func (p *sessionPool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.open)
}
