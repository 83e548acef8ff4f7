package main

// M: the 9 a.m. login storm. N logins are started as fast as the gateway
// takes them (64 clients, one distinct user each), and every mail is
// followed to the SMTP server that accepts it: mailpit, which takes
// everything, or test/limitedsmtp, a relay that allows 5 connections and
// 300 messages a minute; each alone and behind a first server that is
// down (a closed port). See stormMarkdown for how each figure is made.

import (
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mailauth/caddy-mailauth/test/limitedsmtp"
)

var (
	stormLogins  = flag.Int("stormlogins", 5000, "logins of each M run against mailpit")
	stormLimited = flag.Int("stormlimited", 1000, "logins of each M run against the limited relay (300 a minute: 5,000 take 17 minutes)")
)

// stormClients is how many logins are in flight at once.
const stormClients = 64

type stormResult struct {
	name                 string
	logins, answered     int
	delivered, lost      int
	p50, p95, p99        time.Duration
	postP50, postP99     time.Duration
	conns                float64 // SMTP connections opened, per 1,000 mails
	cpuPerMail           time.Duration
	took                 time.Duration
	retries              int // login POSTs not answered with the 303
	refused, throttled   int // limited relay only
	maxInMinute, maxOpen int
}

const stormCaddyfile = `{
	admin 127.0.0.1:%[1]d
	auto_https off
	persist_config off
	mailauth {
		store badger %[2]s
		rate_limit {
			login_per_ip off
			login_per_identity off
			mails_per_manager off
		}
%[3]s
		directory staff local {
%[4]s		}
		profile daily {
			type user
			server http://127.0.0.1:%[5]d
			# Long enough for 5,000 mails at 300 a minute: a shorter link
			# would expire in the queue, and its mail be dropped unsent.
			link_expiration 30m
			mail_servers %[6]s
			fallback staff
		}
	}
}

http://127.0.0.1:%[5]d {
	bind 127.0.0.1
	mailauth {
		default_profile daily
	}
	respond "app" 200
}
`

func stormServer(name string, port int, extra string) string {
	return fmt.Sprintf("\t\tmail_server %s {\n\t\t\thost 127.0.0.1\n\t\t\tport %d\n\t\t\ttls none\n\t\t\ttimeout 5s\n%s\t\t\tfrom \"Bench Gateway <gateway@bench.test>\"\n\t\t}\n", name, port, extra)
}

func (rep *report) storm(tmp string, mp *mailpit) error {
	dead := freePort() // nothing listens: every dial is refused
	type run struct {
		name    string
		n       int
		limited bool
		down    bool
	}
	runs := []run{
		{"mailpit", *stormLogins, false, false},
		{"mailpit, first of two servers down", *stormLogins, false, true},
		{"relay 5 conns, 300/min", *stormLimited, true, false},
		{"relay 5 conns, 300/min, first of two servers down", *stormLimited, true, true},
	}
	for i, r := range runs {
		var relay *limitedsmtp.Server
		port := mp.smtp
		extra := ""
		if r.limited {
			var err error
			if relay, err = limitedsmtp.Start(limitedsmtp.Limits{Connections: 5, Messages: 300, Window: time.Minute}); err != nil {
				return err
			}
			port = relay.Port
			extra = "\t\t\trate 300/1m\n"
		}
		servers, use := stormServer("main", port, extra), "main"
		if r.down {
			servers = stormServer("dead", dead, "") + servers
			use = "dead main"
		}
		res, err := rep.stormRun(tmp, fmt.Sprintf("storm%d", i), r.name, r.n, servers, use, mp, relay)
		if relay != nil {
			relay.Close()
		}
		if err != nil {
			return err
		}
		fmt.Printf("M %s: %+v\n", r.name, *res)
		rep.stormRuns = append(rep.stormRuns, *res)
	}
	return nil
}

func (rep *report) stormRun(tmp, id, name string, n int, servers, use string, mp *mailpit, relay *limitedsmtp.Server) (*stormResult, error) {
	admin, site := freePort(), freePort()
	var users strings.Builder
	for i := range n {
		fmt.Fprintf(&users, "\t\t\tuser s%05d {\n\t\t\t\temail s%05d@%s.bench.test\n\t\t\t}\n", i, i, id)
	}
	cfg := fmt.Sprintf(stormCaddyfile, admin, filepath.Join(tmp, id+"-store"), servers, users.String(), site, use)
	p, err := startCaddy(tmp, id, cfg, site)
	if err != nil {
		return nil, err
	}
	defer p.stop()

	var mu sync.Mutex
	accepted := map[string]time.Time{}
	if relay != nil {
		relay.OnReceived(func(r limitedsmtp.Received) {
			mu.Lock()
			accepted[strings.Trim(r.To, "<>")] = r.At
			mu.Unlock()
		})
	}
	cpu0, err := cpuTicks(p.cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	res := &stormResult{name: name, logins: n}
	posted := make(map[string]time.Time, n)
	var postTimes []time.Duration
	next := make(chan int)
	var wg sync.WaitGroup
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 30 * time.Second}
	began := time.Now()
	for range stormClients {
		wg.Go(func() {
			for i := range next {
				addr := fmt.Sprintf("s%05d@%s.bench.test", i, id)
				for try := 0; try < 20; try++ {
					t0 := time.Now()
					resp, err := client.PostForm(fmt.Sprintf("http://127.0.0.1:%d/.mailauth/login", site), url.Values{"identity": {fmt.Sprintf("s%05d", i)}, "return": {"/"}})
					if err == nil {
						resp.Body.Close()
					}
					if err == nil && resp.StatusCode == http.StatusSeeOther {
						mu.Lock()
						posted[addr] = t0
						postTimes = append(postTimes, time.Since(t0))
						mu.Unlock()
						break
					}
					mu.Lock()
					res.retries++
					mu.Unlock()
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	res.answered = len(posted)

	// Wait for the mail: as long as the relay's rate needs, and more.
	limit := 3 * time.Minute
	if relay != nil {
		limit = time.Duration(float64(n)/300*float64(time.Minute)) + 2*time.Minute
	}
	deadline := began.Add(limit)
	for time.Now().Before(deadline) {
		if relay == nil {
			if err := mp.acceptedSince(id, accepted, &mu); err != nil {
				return nil, err
			}
		}
		mu.Lock()
		got := len(accepted)
		mu.Unlock()
		if got >= res.answered {
			break
		}
		time.Sleep(time.Second)
	}
	res.took = time.Since(began)
	cpu1, _ := cpuTicks(p.cmd.Process.Pid)

	mu.Lock()
	var lat []time.Duration
	for addr, t0 := range posted {
		if at, ok := accepted[addr]; ok {
			lat = append(lat, at.Sub(t0))
		}
	}
	mu.Unlock()
	slices.Sort(lat)
	slices.Sort(postTimes)
	res.delivered = len(lat)
	res.lost = res.answered - res.delivered
	res.p50, res.p95, res.p99 = pct(lat, 0.50), pct(lat, 0.95), pct(lat, 0.99)
	res.postP50, res.postP99 = pct(postTimes, 0.50), pct(postTimes, 0.99)
	if res.delivered > 0 {
		res.cpuPerMail = time.Duration(float64(cpu1-cpu0) / clockTicks * float64(time.Second) / float64(res.delivered))
		dials := smtpDials(admin)
		res.conns = float64(dials) / float64(res.delivered) * 1000
	}
	if relay != nil {
		st := relay.Stats()
		res.refused, res.throttled, res.maxOpen = st.Refused, st.Throttled, st.MaxOpen
		res.maxInMinute = relay.MaxInWindow()
	}
	return res, nil
}

func pct(xs []time.Duration, p float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	return xs[min(len(xs)-1, int(p*float64(len(xs))))]
}

var dialsRE = regexp.MustCompile(`(?m)^caddy_mailauth_smtp_connections_total\{server="main"\} (\d+)`)

// smtpDials reads Caddy's count of connections opened to the server that
// carries the mail (the down one's refused dials are not counted).
func smtpDials(admin int) int {
	m := dialsRE.FindSubmatch(fetch(fmt.Sprintf("http://127.0.0.1:%d/metrics", admin)))
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// acceptedSince adds to accepted the time mailpit received each message
// to an address of run id.
func (m *mailpit) acceptedSince(id string, accepted map[string]time.Time, mu *sync.Mutex) error {
	var list struct {
		Messages []struct {
			Created time.Time
			To      []struct{ Address string }
		} `json:"messages"`
	}
	q := url.Values{"query": {"to:" + id + ".bench.test"}, "limit": {"10000"}}
	if err := getJSON(m.api+"/api/v1/search?"+q.Encode(), &list); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	for _, msg := range list.Messages {
		for _, to := range msg.To {
			if strings.HasSuffix(to.Address, "@"+id+".bench.test") {
				accepted[to.Address] = msg.Created
			}
		}
	}
	return nil
}

func stormMarkdown(runs []stormResult) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("## Login storm (M)\n\n")
	p("Measured %s; run alone with `bash test/bench/load.sh -only M` (it rewrites this section only). The machine is shared with other work, so the figures are noisy.\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	p("| Run | Logins answered | Mails accepted | Lost | Login POST → mail accepted p50 / p95 / p99 | POST p50 / p99 | SMTP connections per 1,000 mails | Caddy CPU per mail | Wall time |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range runs {
		p("| %s | %d of %d | %d | %d | %s / %s / %s | %s / %s | %.1f | %s | %s |\n", r.name, r.answered, r.logins, r.delivered, r.lost,
			ms(r.p50), ms(r.p95), ms(r.p99), ms(r.postP50), ms(r.postP99), r.conns, r.cpuPerMail.Round(time.Microsecond), r.took.Round(time.Second))
	}
	p("\n")
	for _, r := range runs {
		if strings.HasPrefix(r.name, "relay") {
			p("- %s: the relay refused %d connections (421) and %d messages for its rate (451 4.7.1); at most %d sessions were open at once and %d messages started in any one minute.\n", r.name, r.refused, r.throttled, r.maxOpen, r.maxInMinute)
		}
	}
	p(`
How each figure is made: a fresh Caddy (no -race, Badger store, abuse limits off, link_expiration 30m) per run, with one user per login; %d clients POST `+"`/.mailauth/login`"+` as fast as the gateway answers, each login retried until it is answered with the 303 (retries: %s). A login's latency runs from the start of its POST to the moment the SMTP server accepted its mail: mailpit's `+"`Created`"+` time read from its API, or the relay's own clock when it answered the DATA. Lost is answered logins whose mail never arrived (the run waits for the relay's rate, plus two minutes). Connections are `+"`caddy_mailauth_smtp_connections_total`"+` for the server that carried the mail, per 1,000 mails accepted; the down server is a closed port, so its dials are refused at once and the breaker tries it only after the healthy one. CPU is Caddy's utime+stime from /proc over the whole run, logins included, over the mails accepted. The relay's runs default to %d logins (`+"`-stormlimited`"+`): at 300 a minute 5,000 mails take 17 minutes, longer than the rest of the bench.
`, stormClients, retries(runs), *stormLimited)
	return b.String()
}

func retries(runs []stormResult) string {
	var out []string
	for _, r := range runs {
		out = append(out, fmt.Sprintf("%s %d", r.name, r.retries))
	}
	return strings.Join(out, "; ")
}

func ms(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.0f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

// writeStormOnly replaces the storm section of an existing report, so that
// M can be run alone without losing the other figures.
func writeStormOnly(path, section string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	return os.WriteFile(path, []byte(spliceSection(string(old), section)), 0o644)
}

// spliceSection puts section where the report's storm section is, or
// before its CPU profiles when it has none.
func spliceSection(doc, section string) string {
	const head = "## Login storm (M)\n"
	if i := strings.Index(doc, head); i >= 0 {
		rest := doc[i+len(head):]
		if j := strings.Index(rest, "\n## "); j >= 0 {
			return doc[:i] + section + rest[j+1:]
		}
		return doc[:i] + section
	}
	if i := strings.Index(doc, "## CPU profiles\n"); i >= 0 {
		return doc[:i] + section + "\n" + doc[i:]
	}
	return doc + "\n" + section
}
