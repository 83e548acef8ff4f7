// Package limitedsmtp runs an SMTP server that behaves like a corporate
// relay under load: it takes only so many connections at once (the next one
// is told 421 and closed) and only so many messages per window (the next
// MAIL FROM is told 451 4.7.1), and it records every message it accepts
// and every connection it was asked for. The SMTP protocol is
// github.com/emersion/go-smtp's; this package only adds the limits.
package limitedsmtp

import (
	"errors"
	"io"
	"net"
	"net/mail"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Limits are what the server allows. Zero values mean no limit.
type Limits struct {
	// Connections is how many sessions may be open at once.
	Connections int
	// Messages per Window is how many messages it accepts in any window
	// of that length (a sliding window, the strictest kind).
	Messages int
	Window   time.Duration
	// IdleTimeout drops a session that sends nothing for this long, with
	// go-smtp's 421; the default is a minute.
	IdleTimeout time.Duration
}

// Received is one accepted message.
type Received struct {
	From, To string
	// Subject is the message's Subject header.
	Subject string
	At      time.Time
}

// Server is a running limited SMTP server on a loopback port.
type Server struct {
	// Addr is host:port; Port is the port alone.
	Addr string
	Port int

	limits Limits
	srv    *smtp.Server
	done   chan struct{}

	mu         sync.Mutex
	open       int
	maxOpen    int
	dials      int
	refused    int         // connections told 421
	throttled  int         // MAIL FROMs told 451 for the rate
	accepted   []time.Time // when each MAIL FROM within the rate was taken
	received   []Received
	onReceived func(Received)
}

// Start listens on a free loopback port and serves until Close.
func Start(l Limits) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{limits: l, done: make(chan struct{})}
	s.Addr = ln.Addr().String()
	s.Port = ln.Addr().(*net.TCPAddr).Port
	s.srv = smtp.NewServer(backend{s})
	s.srv.Domain = "limited.localhost"
	s.srv.ReadTimeout = time.Minute
	if l.IdleTimeout > 0 {
		s.srv.ReadTimeout = l.IdleTimeout
	}
	s.srv.WriteTimeout = time.Minute
	s.srv.MaxRecipients = 10
	s.srv.AllowInsecureAuth = true
	s.srv.ErrorLog = discard{}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	return s, nil
}

// OnReceived installs a function called (on the server's goroutine) with
// each accepted message; call it before mail arrives.
func (s *Server) OnReceived(f func(Received)) {
	s.mu.Lock()
	s.onReceived = f
	s.mu.Unlock()
}

// Close stops the server and waits for its connections to end.
func (s *Server) Close() error {
	err := s.srv.Close()
	<-s.done
	return err
}

// Stats is what the server saw.
type Stats struct {
	// Connections counts every connection that reached the server,
	// refused ones included; Refused those told 421.
	Connections, Refused int
	// Open is how many sessions are open now; MaxOpen the most at once.
	Open, MaxOpen int
	// Throttled counts MAIL FROMs refused for the rate.
	Throttled int
	// Accepted counts messages taken.
	Accepted int
}

// Stats returns what the server saw so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Connections: s.dials, Refused: s.refused, Open: s.open, MaxOpen: s.maxOpen, Throttled: s.throttled, Accepted: len(s.received)}
}

// Received returns the accepted messages in order of acceptance.
func (s *Server) Received() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.received...)
}

// MaxInWindow is the most messages started (MAIL FROM taken) within any
// one Window: the figure that the rate bounds. It is zero without a rate.
func (s *Server) MaxInWindow() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	most, j := 0, 0
	for i, t := range s.accepted {
		for t.Sub(s.accepted[j]) >= s.limits.Window {
			j++
		}
		most = max(most, i-j+1)
	}
	return most
}

type backend struct{ s *Server }

// NewSession is called once per connection, at its EHLO. Over the limit,
// go-smtp's Reject answers 421 and closes it.
func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s := b.s
	s.mu.Lock()
	s.dials++
	if s.limits.Connections > 0 && s.open >= s.limits.Connections {
		s.refused++
		s.mu.Unlock()
		c.Reject()
		return nil, errTooMany
	}
	s.open++
	s.maxOpen = max(s.maxOpen, s.open)
	s.mu.Unlock()
	return &session{s: s}, nil
}

var errTooMany = errors.New("too many connections")

type session struct {
	s        *Server
	from, to string
}

func (x *session) Reset() { x.from, x.to = "", "" }

func (x *session) Logout() error {
	x.s.mu.Lock()
	x.s.open--
	x.s.mu.Unlock()
	return nil
}

// Mail refuses a message that would exceed the rate, counting the
// messages accepted within the window before now.
func (x *session) Mail(from string, _ *smtp.MailOptions) error {
	s := x.s
	if s.limits.Messages > 0 {
		now := time.Now()
		s.mu.Lock()
		n := 0
		for i := len(s.accepted) - 1; i >= 0 && now.Sub(s.accepted[i]) < s.limits.Window; i-- {
			n++
		}
		if n >= s.limits.Messages {
			s.throttled++
			s.mu.Unlock()
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Rate limit exceeded, try again later"}
		}
		// Counted when asked, as relays do: two sessions racing for the
		// last slot cannot both get it.
		s.accepted = append(s.accepted, now)
		s.mu.Unlock()
	}
	x.from = from
	return nil
}

func (x *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	x.to = to
	return nil
}

func (x *session) Data(r io.Reader) error {
	msg, err := mail.ReadMessage(r)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, msg.Body)
	rec := Received{From: x.from, To: x.to, Subject: msg.Header.Get("Subject"), At: time.Now()}
	s := x.s
	s.mu.Lock()
	s.received = append(s.received, rec)
	f := s.onReceived
	s.mu.Unlock()
	if f != nil {
		f(rec)
	}
	return nil
}

type discard struct{}

func (discard) Printf(string, ...any) {}
func (discard) Println(...any)        {}
