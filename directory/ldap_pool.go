package directory

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// bindFailureBackoff is how long a pool answers with the last failed bind
// instead of binding again. A wrong service password then costs the server
// one failed bind per interval, not one per login attempt, which keeps
// lockout policies (Active Directory's) from locking the account.
const bindFailureBackoff = 10 * time.Second

// dialer opens connections ready to search: connected, TLS as configured,
// bound as the service account.
type dialer struct {
	url      string
	startTLS bool
	bindDN   string
	password string
	tls      *tls.Config
}

func (dl dialer) dial(timeout time.Duration) (*ldap.Conn, error) {
	c, err := ldap.DialURL(dl.url,
		ldap.DialWithDialer(&net.Dialer{Timeout: timeout}),
		ldap.DialWithTLSConfig(dl.tls))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", dl.url, err)
	}
	c.SetTimeout(timeout)
	if dl.startTLS {
		if err := c.StartTLS(dl.tls); err != nil {
			c.Close()
			return nil, fmt.Errorf("start_tls with %s: %w", dl.url, err)
		}
	}
	if dl.bindDN != "" {
		if err := c.Bind(dl.bindDN, dl.password); err != nil {
			c.Close()
			return nil, fmt.Errorf("binding as %q: %w", dl.bindDN, err)
		}
	}
	return c, nil
}

// connPool lends bound connections, at most size at once; lookups beyond
// that wait for one to come back. Connections that broke are dropped.
type connPool struct {
	name   string
	dialer dialer
	logger *zap.Logger
	slots  chan struct{} // one per connection lent out
	now    func() time.Time

	mu     sync.Mutex
	idle   []*ldap.Conn
	closed bool
	// bindErr is the last failed bind, repeated until bindRetryAt.
	bindErr     error
	bindRetryAt time.Time
}

func newConnPool(name string, dl dialer, size int, logger *zap.Logger) *connPool {
	return &connPool{
		name:   name,
		dialer: dl,
		logger: logger,
		slots:  make(chan struct{}, size),
		now:    time.Now,
	}
}

// errPoolClosed is returned by lookups after Close.
var errPoolClosed = errors.New("closed")

// do runs op on a pooled connection with a request timeout of at most
// timeout, less if ctx ends sooner; cancelling ctx closes the connection,
// which ends op. If op fails because a connection taken from the pool has
// broken (the server restarted, or closed it while idle), op runs once
// more on a fresh connection. Errors the server answered are returned as
// they are, and the connection goes back to the pool.
func (p *connPool) do(ctx context.Context, timeout time.Duration, op func(*ldap.Conn, time.Duration) error) error {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("directory %q: ldap: waiting for a free connection: %w", p.name, ctx.Err())
	}
	defer func() { <-p.slots }()
	for {
		t, err := opTimeout(ctx, timeout)
		if err != nil {
			return fmt.Errorf("directory %q: ldap: %w", p.name, err)
		}
		c, reused, err := p.get(t)
		if err != nil {
			return err
		}
		c.SetTimeout(t)
		stop := context.AfterFunc(ctx, func() { c.Close() })
		err = op(c, t)
		if !stop() {
			c.Close()
			return fmt.Errorf("directory %q: ldap: %w", p.name, ctx.Err())
		}
		if err == nil || (serverAnswered(err) && !c.IsClosing()) {
			p.put(c)
			return err
		}
		c.Close()
		if !reused {
			return err
		}
		if ce := p.logger.Check(zapcore.DebugLevel, "ldap pooled connection broken; redialing"); ce != nil {
			ce.Write(zap.String("directory", p.name), zap.Error(err))
		}
	}
}

// opTimeout caps timeout by ctx's deadline.
func opTimeout(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if deadline, ok := ctx.Deadline(); ok {
		left := time.Until(deadline)
		if left <= 0 {
			return 0, context.DeadlineExceeded
		}
		timeout = min(timeout, left)
	}
	return timeout, nil
}

// get returns an idle connection (reused true) or dials one.
func (p *connPool) get(timeout time.Duration) (c *ldap.Conn, reused bool, err error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, false, fmt.Errorf("directory %q: ldap: %w", p.name, errPoolClosed)
	}
	if p.bindErr != nil && p.now().Before(p.bindRetryAt) {
		err := p.bindErr
		p.mu.Unlock()
		return nil, false, err
	}
	for len(p.idle) > 0 {
		c = p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if !c.IsClosing() {
			p.mu.Unlock()
			return c, true, nil
		}
		c.Close()
	}
	p.mu.Unlock()

	c, err = p.dialer.dial(timeout)
	if err != nil {
		err = fmt.Errorf("directory %q: ldap: %w", p.name, err)
		if ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
			p.mu.Lock()
			p.bindErr, p.bindRetryAt = err, p.now().Add(bindFailureBackoff)
			p.mu.Unlock()
			p.logger.Error("ldap service account bind failed; lookups fail until it succeeds",
				zap.String("directory", p.name), zap.String("bind_dn", p.dialer.bindDN),
				zap.Duration("retry_after", bindFailureBackoff), zap.Error(err))
		}
		return nil, false, err
	}
	p.mu.Lock()
	p.bindErr = nil
	p.mu.Unlock()
	return c, false, nil
}

// put returns a healthy connection to the pool.
func (p *connPool) put(c *ldap.Conn) {
	p.mu.Lock()
	if p.closed || c.IsClosing() {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// close closes the idle connections; lent ones are closed when they come
// back.
func (p *connPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}
