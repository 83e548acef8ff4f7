package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// E is what waiting browsers cost Caddy. Each of -pollers browsers has a
// pending login of its own and its own keep-alive connection, and they
// poll the same Caddy in two ways, one after the other:
//
//	E1  GET /.mailauth/status every 2 s: the definition of the
//	    target, and what the waiting page did before it long-polled.
//	E2  GET /.mailauth/status?wait=pending in a loop, as wait.js does now:
//	    Caddy holds each request until the login changes or 25 s pass,
//	    and the browser asks again as soon as it has the answer.
//
// The cost is Caddy's utime+stime over a window, less what the same Caddy
// burns with nobody polling (outbox worker, Badger's background work),
// measured just before E1 over half as long a window.
//
// E1 comes with its floor: as many browsers polling, at the same rate, a
// site of the same Caddy that answers the same JSON with a plain respond.
// That is what Caddy, Go's HTTP server and the kernel cost per request,
// whatever the handler. E1 and its floor take turns, pollTurns times, so
// that a noisy neighbour hits both alike.

const (
	// shortPollEvery is E1's period.
	shortPollEvery = 2 * time.Second
	// pollTurns is how many turns E1 and its floor take each.
	pollTurns = 3
	// turnSettle is the time a turn runs unmeasured, while the answers
	// to the previous turn's last requests come in.
	turnSettle = 500 * time.Millisecond
	// longPollHold is how long Caddy holds a status request with wait=
	// (caddymodule's longPoll); E2 spreads its browsers over it.
	longPollHold = 25 * time.Second
	// longPollTimeout is E2's client timeout: above longPollHold, so that
	// a held request is answered by Caddy, not abandoned by the client.
	longPollTimeout = 35 * time.Second
)

// pollTarget is the bound on E's CPU share, % of one core.
const pollTarget = 10

// pollResult is one E measurement.
type pollResult struct {
	gross    float64    // Caddy's CPU over the window, % of one core
	idle     float64    // the same with nobody polling
	rate     float64    // answers a second
	lat      [2]float64 // p50 and p99 of the answer time, ms
	failures int64
	profile  string // pprof's top functions, when the target was missed
}

// net is the CPU share that the polling costs.
func (p *pollResult) net() float64 { return p.gross - p.idle }

// cpuPerAnswer is the CPU time that one answer costs, in µs.
func (p *pollResult) cpuPerAnswer() float64 {
	if p.rate == 0 {
		return 0
	}
	return p.net() / 100 / p.rate * 1e6
}

// prof is the profile taken during the measurement, if any.
func (p *pollResult) prof() string {
	if p == nil {
		return ""
	}
	return p.profile
}

// floor describes p as E1's floor, for the E1 row.
func (p *pollResult) floor() string {
	if p == nil {
		return "no floor measured"
	}
	return fmt.Sprintf("floor, Caddy answering the same with a `respond`: %.1f %%, %.0f µs a poll", p.net(), p.cpuPerAnswer())
}

// polling measures E1 and E2 on the Caddy c, whose mailauth site is site,
// and E1's floor, which polls floor instead.
func (rep *report) polling(c *proc, site, floor string, admin int) error {
	cookies, err := waitingLogins(site, *pollers)
	if err != nil {
		return err
	}
	pid := c.cmd.Process.Pid
	idle0, err := cpuTicks(pid)
	if err != nil {
		return err
	}
	ti := time.Now()
	time.Sleep(*pollWindow / 2)
	idle1, err := cpuTicks(pid)
	if err != nil {
		return err
	}
	idle := float64(idle1-idle0) / clockTicks / time.Since(ti).Seconds() * 100

	if rep.e1, rep.e1Floor, err = shortPolls(pid, admin, idle, cookies, site+"/.mailauth/status", floor); err != nil {
		return err
	}
	rep.e2, err = longPolls(pid, admin, idle, cookies, site+"/.mailauth/status?wait=pending")
	return err
}

// waitingLogins starts n logins for unknown users and returns their
// pending cookies: each login is stored and polled like any other, and no
// mail is sent, so mailpit's work stays out of the figure.
func waitingLogins(site string, n int) ([]string, error) {
	client := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	cookies := make([]string, n)
	for i := range cookies {
		req, _ := http.NewRequest(http.MethodPost, site+"/.mailauth/login", strings.NewReader(url.Values{"identity": {fmt.Sprintf("waiting%d", i)}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		resp.Body.Close()
		if cookies[i] = cookieIn(resp, "__Host-mailauth_pending"); cookies[i] == "" {
			return nil, fmt.Errorf("poller %d: login POST gave %s and no pending cookie", i, resp.Status)
		}
	}
	return cookies, nil
}

// shortPolls is E1 and its floor. Each has its own browsers, one per
// cookie with its own connection, spread evenly over the 2 s period, and
// a browser polls at each tick of its period while its side has the turn.
// After a warm-up in which each side has the turn for two periods (every
// browser has connected and polled), they take pollTurns turns each of
// -pollwindow/pollTurns measured, and each figure is over all its turns.
func shortPolls(pid, admin int, idle float64, cookies []string, status, floor string) (e1, e1Floor *pollResult, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	urls := []string{status, floor}
	recs := make([]pollRecorder, len(urls))
	var turn atomic.Int32
	for side, u := range urls {
		for i, cookie := range cookies {
			wg.Go(func() {
				cl := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 5 * time.Second}
				defer cl.CloseIdleConnections()
				if !sleep(ctx, time.Duration(i)*shortPollEvery/time.Duration(len(cookies))) {
					return
				}
				t := time.NewTicker(shortPollEvery)
				defer t.Stop()
				for {
					if int(turn.Load()) == side {
						recs[side].poll(ctx, cl, u, cookie)
					}
					select {
					case <-ctx.Done():
						return
					case <-t.C:
					}
				}
			})
		}
	}
	for side := range urls {
		turn.Store(int32(side))
		time.Sleep(2 * shortPollEvery)
	}
	ticks := make([]int64, len(urls))
	secs := make([]float64, len(urls))
	marks := make([]pollMark, len(urls))
	for r := range pollTurns {
		for side := range urls {
			turn.Store(int32(side))
			time.Sleep(turnSettle)
			m0 := recs[side].mark()
			cpu0, err := cpuTicks(pid)
			if err != nil {
				return nil, nil, err
			}
			t0 := time.Now()
			time.Sleep(*pollWindow / pollTurns)
			cpu1, err := cpuTicks(pid)
			if err != nil {
				return nil, nil, err
			}
			el := time.Since(t0).Seconds()
			m := recs[side].mark().since(m0)
			log.Printf("E1 turn %d, %s: %.0f polls/s, Caddy CPU %.1f%% of one core", r+1, []string{"status", "floor"}[side], float64(m.polls)/el, float64(cpu1-cpu0)/clockTicks/el*100)
			ticks[side] += cpu1 - cpu0
			secs[side] += el
			marks[side] = marks[side].add(m)
		}
	}
	results := make([]*pollResult, len(urls))
	for side := range urls {
		results[side] = recs[side].result(marks[side], float64(ticks[side])/clockTicks/secs[side]*100, idle, secs[side])
		log.Print(results[side].String([]string{"E1", "E1 floor"}[side]))
	}
	e1, e1Floor = results[0], results[1]
	if e1.net() >= pollTarget {
		turn.Store(0)
		e1.profile, _ = profileWhile(admin, 10, func() error { time.Sleep(11 * time.Second); return nil })
	}
	return e1, e1Floor, nil
}

// longPolls is E2. Each browser loops on long polls as wait.js does; the
// browsers start spread over one hold, as waiting pages opened at random
// times would be. After one hold and a bit of warm-up, every browser is in
// its loop and the answers come at an even rate; then -pollwindow is
// measured.
func longPolls(pid, admin int, idle float64, cookies []string, u string) (*pollResult, error) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	var rec pollRecorder
	for i, cookie := range cookies {
		wg.Go(func() {
			cl := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: longPollTimeout}
			defer cl.CloseIdleConnections()
			if !sleep(ctx, time.Duration(i)*longPollHold/time.Duration(len(cookies))) {
				return
			}
			for ctx.Err() == nil {
				start := time.Now()
				if !rec.poll(ctx, cl, u, cookie) {
					// As wait.js: after a failure, wait 3 s.
					sleep(ctx, 3*time.Second)
					continue
				}
				// As wait.js: an answer that came at once must not turn
				// into a busy loop.
				if time.Since(start) < time.Second {
					sleep(ctx, 2*time.Second)
				}
			}
		})
	}
	time.Sleep(longPollHold + 2*time.Second)
	m0 := rec.mark()
	cpu0, err := cpuTicks(pid)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	time.Sleep(*pollWindow)
	cpu1, err := cpuTicks(pid)
	if err != nil {
		return nil, err
	}
	el := time.Since(t0).Seconds()
	res := rec.result(rec.mark().since(m0), float64(cpu1-cpu0)/clockTicks/el*100, idle, el)
	log.Print(res.String("E2"))
	if res.net() >= pollTarget {
		res.profile, _ = profileWhile(admin, 10, func() error { time.Sleep(11 * time.Second); return nil })
	}
	return res, nil
}

func (p *pollResult) String(name string) string {
	return fmt.Sprintf("%s: %.1f answers/s, Caddy CPU %.1f%% of one core (%.1f%% idle, so %.1f%% net, %.0f µs an answer), answer p50 %.2f ms, %d failures",
		name, p.rate, p.gross, p.idle, p.net(), p.cpuPerAnswer(), p.lat[0], p.failures)
}

// pollRecorder counts the answers of a set of browsers.
type pollRecorder struct {
	mu              sync.Mutex
	polls, failures int64
	lats            []float64 // ms
}

// pollMark is where a pollRecorder's counts stand (to is len(lats)), or
// what they grew by (the answer times are the lats of spans).
type pollMark struct {
	polls, failures int64
	to              int
	spans           [][2]int
}

func (p *pollRecorder) mark() pollMark {
	p.mu.Lock()
	defer p.mu.Unlock()
	return pollMark{polls: p.polls, failures: p.failures, to: len(p.lats)}
}

// since is what the counts grew by from m0 to m.
func (m pollMark) since(m0 pollMark) pollMark {
	return pollMark{polls: m.polls - m0.polls, failures: m.failures - m0.failures, spans: [][2]int{{m0.to, m.to}}}
}

// add sums two growths.
func (m pollMark) add(o pollMark) pollMark {
	return pollMark{polls: m.polls + o.polls, failures: m.failures + o.failures, spans: append(m.spans, o.spans...)}
}

// result is the measurement of what the counts grew by, m, over secs
// seconds in which Caddy used gross % of one core.
func (p *pollRecorder) result(m pollMark, gross, idle, secs float64) *pollResult {
	p.mu.Lock()
	var lats []float64
	for _, s := range m.spans {
		lats = append(lats, p.lats[s[0]:s[1]]...)
	}
	p.mu.Unlock()
	return &pollResult{gross: gross, idle: idle, rate: float64(m.polls) / secs, lat: percentiles(lats), failures: m.failures}
}

// poll sends one status request with the pending cookie and records its
// answer, which must be a 200 saying the login is still pending. It
// reports whether the request got that answer.
func (p *pollRecorder) poll(ctx context.Context, cl *http.Client, u, cookie string) bool {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	req.Header.Set("Cookie", "__Host-mailauth_pending="+cookie)
	start := time.Now()
	resp, err := cl.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			p.mu.Lock()
			p.failures++
			p.mu.Unlock()
		}
		return false
	}
	var answer struct{ State string }
	err = json.NewDecoder(resp.Body).Decode(&answer)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if ctx.Err() != nil {
		return false
	}
	ms := float64(time.Since(start)) / 1e6
	ok := err == nil && resp.StatusCode == http.StatusOK && answer.State == "pending"
	p.mu.Lock()
	p.polls++
	if !ok {
		p.failures++
	}
	p.lats = append(p.lats, ms)
	p.mu.Unlock()
	return ok
}

// sleep waits for d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
