// Command load is the load half of `make bench`. It runs real processes on
// loopback only (Caddy built without -race, mailpit, wrk) and measures:
//
//	A  bare Caddy reverse_proxy to a small upstream (a `respond` site)
//	B  the same with mailauth and a valid session cookie on every request
//	C  the same with an invalid session cookie (the redirect path)
//	D  login starts per second, with the SMTP server up and down
//	E  1,000 waiting browsers: Caddy's CPU share when each polls status
//	   every 2 s (E1), and when each long-polls it as the waiting page does
//	   (E2); see polling.go
//	S  login-start latency and RSS on stores pre-filled with 1k…1M logins;
//	   see scale.go
//	M  the login storm: thousands of logins at once, each mail followed to
//	   mailpit or to a relay with connection and rate limits; see storm.go
//
// A, B and C run in interleaved rounds on one Caddy, as do D up and D down
// on another, and the S sizes on one Caddy each; each figure is the median
// over the rounds, so that a noisy neighbour hits every scenario alike. It
// prints one results table and writes it, with the Go benchmark results,
// to BENCHMARKS.md.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"maps"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mailauth/caddy-mailauth/test/daemon"
)

var (
	caddyBin   = flag.String("caddy", "bin/caddy", "Caddy binary with mailauth, built without -race")
	mailpitBin = flag.String("mailpit", "", "mailpit binary (default $(go env GOPATH)/bin/mailpit)")
	prefillBin = flag.String("prefill", "bin/bench-prefill", "prefill binary (test/bench/prefill)")
	goBench    = flag.String("gobench", "", "file with the output of the Go benchmarks, to include")
	outFile    = flag.String("out", "BENCHMARKS.md", "where to write the report")
	commands   = flag.String("commands", "make bench", "the commands that produced the report, for the record")
	rounds     = flag.Int("rounds", 7, "interleaved rounds")
	dur        = flag.Duration("d", 6*time.Second, "duration of one A/B/C run")
	loginDur   = flag.Duration("dlogin", 5*time.Second, "duration of one D run and of one scale run")
	sizesFlag  = flag.String("sizes", "1000,10000,100000,1000000", "pre-filled store sizes")
	pollers    = flag.Int("pollers", 1000, "waiting browsers in E")
	pollWindow = flag.Duration("pollwindow", 20*time.Second, "CPU measurement window of E1 and of E2")
	only       = flag.String("only", "ABCDESM", "the scenarios to run, for a quick look: A, B and C run together; E runs on their Caddy; M alone rewrites only its section of -out")
)

// want reports whether -only names any of the scenario letters.
func want(letters string) bool {
	return strings.ContainsAny(strings.ToUpper(*only), letters)
}

// procs are the processes this program started; all are killed by PID on
// the way out, whatever the way out is.
var (
	procsMu sync.Mutex
	procs   []*proc
)

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func main() {
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("bench: ")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		stopAll()
		os.Exit(1)
	}()
	err := run()
	stopAll()
	if err != nil {
		log.Fatal(err)
	}
}

func run() error {
	if *mailpitBin == "" {
		out, err := exec.Command("go", "env", "GOPATH").Output()
		if err != nil {
			return err
		}
		gp, _, _ := strings.Cut(strings.TrimSpace(string(out)), string(os.PathListSeparator))
		*mailpitBin = filepath.Join(gp, "bin", "mailpit")
	}
	for _, bin := range []string{*caddyBin, *mailpitBin, *prefillBin} {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("missing %s (make bench builds it): %w", bin, err)
		}
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		return errors.New("wrk is not installed (test/bench/load.sh installs it)")
	}
	tmp, err := os.MkdirTemp("", "mailauth-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	rep := &report{started: time.Now(), runs: map[string][]wrkResult{}}

	mp, err := startMailpit(tmp)
	if err != nil {
		return err
	}
	if want("ABCE") {
		if err := rep.proxy(tmp, mp); err != nil {
			return err
		}
	}
	if want("D") {
		if err := rep.logins(tmp, mp); err != nil {
			return err
		}
	}
	if want("S") {
		if err := rep.scale(tmp, mp); err != nil {
			return err
		}
	}
	if want("M") {
		if err := rep.storm(tmp, mp); err != nil {
			return err
		}
		if !want("ABCDES") {
			section := stormMarkdown(rep.stormRuns)
			fmt.Println(section)
			return writeStormOnly(*outFile, section)
		}
	}
	rep.finished = time.Now()
	if *goBench != "" {
		raw, err := os.ReadFile(*goBench)
		if err != nil {
			return err
		}
		rep.goBench = string(raw)
	}
	md := rep.markdown()
	fmt.Println(rep.table())
	return os.WriteFile(*outFile, []byte(md), 0o644)
}

// ---- A, B, C and E: one Caddy, interleaved rounds --------------------------

const proxyCaddyfile = `{
	admin 127.0.0.1:%[1]d
	auto_https off
	persist_config off
	mailauth {
		store badger %[2]s
		session_lifetime 8h
		# Every login of the load comes from 127.0.0.1 as alice: without
		# this, the abuse limits would answer almost all of them without a
		# lookup or a mail, and D would measure the limited path.
		rate_limit {
			login_per_ip off
			login_per_identity off
			mails_per_manager off
		}
		mail_server mailpit {
			host 127.0.0.1
			port %[3]d
			tls none
			from "Bench Gateway <gateway@bench.test>"
		}
		directory staff local {
			user alice {
				name "Alice Bench"
				email alice@bench.test
			}
		}
		profile daily {
			type user
			server http://127.0.0.1:%[5]d
			link_expiration 15m
			mail_servers mailpit
			fallback staff
		}
	}
}

# A: bare reverse proxy.
http://127.0.0.1:%[4]d {
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:%[6]d
}

# B and C: the same, behind mailauth.
http://127.0.0.1:%[5]d {
	bind 127.0.0.1
	mailauth {
		default_profile daily
	}
	reverse_proxy 127.0.0.1:%[6]d
}

# The upstream of both.
http://127.0.0.1:%[6]d {
	bind 127.0.0.1
	respond "hello from the app" 200
}

# E1's floor: Caddy answering what status answers, without mailauth.
http://127.0.0.1:%[7]d {
	bind 127.0.0.1
	header Content-Type application/json
	respond ` + "`" + `{"state":"pending","expires_in":900}` + "`" + ` 200
}
`

func (rep *report) proxy(tmp string, mp *mailpit) error {
	admin, pa, pb, pu, pf := freePort(), freePort(), freePort(), freePort(), freePort()
	cfg := fmt.Sprintf(proxyCaddyfile, admin, filepath.Join(tmp, "proxy-store"), mp.smtp, pa, pb, pu, pf)
	c, err := startCaddy(tmp, "caddy-proxy", cfg, pb)
	if err != nil {
		return err
	}
	defer c.stop()
	site := fmt.Sprintf("http://127.0.0.1:%d", pb)
	if want("ABC") {
		if err := rep.proxyRounds(admin, pa, site, mp); err != nil {
			return err
		}
	}
	if want("E") {
		return rep.polling(c, site, fmt.Sprintf("http://127.0.0.1:%d/", pf), admin)
	}
	return nil
}

// proxyRounds is A, B and C: interleaved wrk rounds on the proxy Caddy.
func (rep *report) proxyRounds(admin, pa int, site string, mp *mailpit) error {
	session, err := mintSession(site, mp)
	if err != nil {
		return fmt.Errorf("minting a session through the real flow: %w", err)
	}
	rep.sessionMinted = true
	forged := session[:len(session)-4] + "AAAA"
	// A carries a cookie of the same size as B's, so that A and B parse,
	// and proxy upstream, the same request bytes: the only difference
	// between them is mailauth.
	dummy := strings.Repeat("x", len(session))
	scenarios := []struct {
		name string
		args []string
	}{
		{"A", []string{"-H", "Cookie: _ga=GA1.1.1; __Host-mailauth_session=" + dummy, fmt.Sprintf("http://127.0.0.1:%d/app", pa)}},
		{"B", []string{"-H", "Cookie: _ga=GA1.1.1; __Host-mailauth_session=" + session, site + "/app"}},
		{"C", []string{"-H", "Accept: text/html", "-H", "Cookie: _ga=GA1.1.1; __Host-mailauth_session=" + forged, site + "/app"}},
	}
	// Warm up every path once, untimed.
	for _, s := range scenarios {
		if _, err := runWrk(2*time.Second, wrkConns, s.args...); err != nil {
			return err
		}
	}
	for r := range *rounds {
		// Each round starts with a different scenario, so that none of them
		// always runs first (on a CPU that another job has just left idle)
		// or always right after the same neighbour.
		for i := range scenarios {
			s := scenarios[(r+i)%len(scenarios)]
			res, err := runWrk(*dur, wrkConns, s.args...)
			if err != nil {
				return fmt.Errorf("%s round %d: %w", s.name, r+1, err)
			}
			log.Printf("round %d %s: %.0f req/s p99 %.2f ms", r+1, s.name, res.rps, res.p99)
			rep.runs[s.name] = append(rep.runs[s.name], res)
		}
	}
	// Where B's time goes, measured apart from the rounds.
	rep.profileB, err = profileWhile(admin, 6, func() error {
		_, err := runWrk(7*time.Second, wrkConns, scenarios[1].args...)
		return err
	})
	return err
}

// wrkConns is the wrk concurrency for A/B/C: two threads, 50 connections.
const wrkConns = 50

// mintSession signs in through the real flow: login POST, the link from
// mailpit, the confirm POST, then complete with the pending cookie.
func mintSession(site string, mp *mailpit) (string, error) {
	client := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post := func(path string, form url.Values, cookie string) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodPost, site+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp, nil
	}
	resp, err := post("/.mailauth/login", url.Values{"identity": {"alice"}, "return": {"/app"}}, "")
	if err != nil {
		return "", err
	}
	pending := cookieIn(resp, "__Host-mailauth_pending")
	if resp.StatusCode != http.StatusSeeOther || pending == "" {
		return "", fmt.Errorf("login POST: %s, pending cookie %q", resp.Status, pending)
	}
	// With number matching on (the default), the confirm POST must name
	// the number that the waiting page shows; with it off there is none.
	match, csrf, err := waitingPage(client, site, pending)
	if err != nil {
		return "", err
	}
	token, err := mp.waitToken("alice@bench.test", 20*time.Second)
	if err != nil {
		return "", err
	}
	if resp, err = post("/.mailauth/verify", url.Values{"token": {token}, "match": {match}}, ""); err != nil {
		return "", err
	} else if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("confirm POST: %s", resp.Status)
	}
	if resp, err = post("/.mailauth/complete", url.Values{"csrf": {csrf}}, "__Host-mailauth_pending="+pending); err != nil {
		return "", err
	}
	session := cookieIn(resp, "__Host-mailauth_session")
	if resp.StatusCode != http.StatusSeeOther || session == "" {
		return "", fmt.Errorf("complete POST: %s, no session cookie", resp.Status)
	}
	// The session must open the app, or B would measure redirects.
	req, _ := http.NewRequest(http.MethodGet, site+"/app", nil)
	req.Header.Set("Cookie", "__Host-mailauth_session="+session)
	if resp, err = client.Do(req); err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("the minted session gets %s, not 200", resp.Status)
	}
	return session, nil
}

var (
	matchRE = regexp.MustCompile(`id="match-code">\s*([0-9]+)\s*<`)
	csrfRE  = regexp.MustCompile(`name="csrf" value="([^"]*)"`)
)

// waitingPage reads, from the waiting page of the login with the given
// pending cookie, the number to match ("" when the page shows none) and
// the form token its complete form carries.
func waitingPage(client *http.Client, site, pending string) (match, csrf string, err error) {
	req, _ := http.NewRequest(http.MethodGet, site+"/.mailauth/wait", nil)
	req.Header.Set("Cookie", "__Host-mailauth_pending="+pending)
	resp, err := client.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("waiting page: %s", resp.Status)
	}
	if m := matchRE.FindSubmatch(body); m != nil {
		match = string(m[1])
	}
	if m := csrfRE.FindSubmatch(body); m != nil {
		csrf = string(m[1])
	}
	return match, csrf, nil
}

func cookieIn(resp *http.Response, name string) string {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// ---- D: login starts, SMTP up and down -----------------------------------

const loginCaddyfile = `{
	admin 127.0.0.1:%[1]d
	auto_https off
	persist_config off
	mailauth {
		store badger %[2]s
		# The load's logins all come from 127.0.0.1 as alice; with the
		# default abuse limits nearly all would be answered without a
		# lookup or a mail, and this would measure the limited path.
		rate_limit {
			login_per_ip off
			login_per_identity off
			mails_per_manager off
		}
		mail_server up {
			host 127.0.0.1
			port %[3]d
			tls none
			from "Bench Gateway <gateway@bench.test>"
		}
		mail_server down {
			host 127.0.0.1
			port %[4]d
			tls none
			from "Bench Gateway <gateway@bench.test>"
		}
		directory staff local {
			user alice {
				email alice@bench.test
			}
		}
		profile up {
			type user
			server http://127.0.0.1:%[5]d
			link_expiration 15m
			mail_servers up
			fallback staff
		}
		profile down {
			type user
			server http://127.0.0.1:%[6]d
			link_expiration 15m
			mail_servers down
			fallback staff
		}
	}
}

http://127.0.0.1:%[5]d {
	bind 127.0.0.1
	mailauth {
		default_profile up
	}
	respond "app" 200
}

http://127.0.0.1:%[6]d {
	bind 127.0.0.1
	mailauth {
		default_profile down
	}
	respond "app" 200
}
`

// loginConns is the wrk concurrency for login starts.
const loginConns = 16

func (rep *report) logins(tmp string, mp *mailpit) error {
	// The "down" server is a loopback port that nothing listens on, so
	// every attempt is refused; mail piles up in the outbox and retries.
	admin, up, down, dead := freePort(), freePort(), freePort(), freePort()
	cfg := fmt.Sprintf(loginCaddyfile, admin, filepath.Join(tmp, "login-store"), mp.smtp, dead, up, down)
	c, err := startCaddy(tmp, "caddy-login", cfg, up)
	if err != nil {
		return err
	}
	defer c.stop()
	script := filepath.Join(tmp, "login.lua")
	if err := writeLoginScript(script); err != nil {
		return err
	}
	sites := map[string]string{"D up": fmt.Sprintf("http://127.0.0.1:%d/.mailauth/login", up), "D down": fmt.Sprintf("http://127.0.0.1:%d/.mailauth/login", down)}
	for _, name := range []string{"D up", "D down"} {
		if _, err := runWrk(2*time.Second, loginConns, "-s", script, sites[name]); err != nil {
			return err
		}
	}
	for r := range *rounds {
		for _, name := range []string{"D up", "D down"} {
			res, err := runWrk(*loginDur, loginConns, "-s", script, sites[name])
			if err != nil {
				return fmt.Errorf("%s round %d: %w", name, r+1, err)
			}
			if res.non2xx3xx > 0 || res.errors > 0 {
				return fmt.Errorf("%s round %d: %d non-2xx/3xx answers, %d socket errors", name, r+1, res.non2xx3xx, res.errors)
			}
			log.Printf("round %d %s: %.0f logins/s p50 %.2f ms p99 %.2f ms", r+1, name, res.rps, res.p50, res.p99)
			rep.runs[name] = append(rep.runs[name], res)
		}
	}
	rep.profileD, err = profileWhile(admin, 5, func() error {
		_, err := runWrk(6*time.Second, loginConns, "-s", script, sites["D up"])
		return err
	})
	return err
}

func writeLoginScript(path string) error {
	return os.WriteFile(path, []byte(loginScript), 0o644)
}

const loginScript = `wrk.method = "POST"
wrk.body = "identity=alice&return=%2Fapp"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
`

// writeLoginHistScript is writeLoginScript whose wrk also prints its whole
// latency histogram at the end, one "hist <µs> <count>" line per latency
// seen, so that runs can be merged (see parseWrk).
func writeLoginHistScript(path string) error {
	return os.WriteFile(path, []byte(loginScript+`
done = function(summary, latency, requests)
  for i = 1, #latency do
    local us, n = latency(i)
    io.write("hist ", us, " ", n, "\n")
  end
end
`), 0o644)
}

// ---- processes ---------------------------------------------------------------

func start(tmp, name string, args []string, env []string) (*proc, error) {
	logf, err := os.Create(filepath.Join(tmp, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(p.done) }()
	procsMu.Lock()
	procs = append(procs, p)
	procsMu.Unlock()
	return p, nil
}

// stop kills the process by its PID and waits for it.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func stopAll() {
	procsMu.Lock()
	defer procsMu.Unlock()
	for _, p := range procs {
		p.stop()
	}
}

func startCaddy(tmp, name, cfg string, port int) (*proc, error) {
	path := filepath.Join(tmp, name+".Caddyfile")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	home := filepath.Join(tmp, name+"-home")
	p, err := start(tmp, name, []string{*caddyBin, "run", "--config", path, "--adapter", "caddyfile"},
		[]string{"HOME=" + home, "XDG_DATA_HOME=" + home + "/data", "XDG_CONFIG_HOME=" + home + "/config", "GOMAXPROCS="})
	if err != nil {
		return nil, err
	}
	if err := waitTCP(p, port, 60*time.Second); err != nil {
		logs, _ := os.ReadFile(filepath.Join(tmp, name+".log"))
		p.stop()
		return nil, fmt.Errorf("%s: %w\n%s", name, err, logs)
	}
	return p, nil
}

type mailpit struct {
	*proc
	smtp int
	api  string
}

func startMailpit(tmp string) (*mailpit, error) {
	smtp, api := freePort(), freePort()
	p, err := start(tmp, "mailpit", []string{*mailpitBin,
		"--smtp", fmt.Sprintf("127.0.0.1:%d", smtp),
		"--listen", fmt.Sprintf("127.0.0.1:%d", api),
		"--database", filepath.Join(tmp, "mailpit.db"),
		"--smtp-auth-accept-any", "--smtp-auth-allow-insecure",
		"--smtp-disable-rdns", "--disable-version-check",
	}, nil)
	if err != nil {
		return nil, err
	}
	if err := waitTCP(p, smtp, 20*time.Second); err != nil {
		return nil, fmt.Errorf("mailpit: %w", err)
	}
	if err := waitTCP(p, api, 20*time.Second); err != nil {
		return nil, fmt.Errorf("mailpit: %w", err)
	}
	return &mailpit{proc: p, smtp: smtp, api: fmt.Sprintf("http://127.0.0.1:%d", api)}, nil
}

var tokenRE = regexp.MustCompile(`token=([A-Za-z0-9_-]{43})`)

// waitToken polls mailpit's API until a message to addr has arrived and
// returns the link token in it.
func (m *mailpit) waitToken(addr string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var list struct {
			Messages []struct {
				ID string
				To []struct{ Address string }
			} `json:"messages"`
		}
		if err := getJSON(m.api+"/api/v1/messages?limit=50", &list); err == nil {
			for _, msg := range list.Messages {
				for _, to := range msg.To {
					if to.Address != addr {
						continue
					}
					var full struct{ Text string }
					if err := getJSON(m.api+"/api/v1/message/"+msg.ID, &full); err != nil {
						return "", err
					}
					if t := tokenRE.FindStringSubmatch(full.Text); t != nil {
						return t[1], nil
					}
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", fmt.Errorf("no mail to %s within %s", addr, timeout)
}

func getJSON(u string, v any) error {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func fetch(u string) []byte {
	resp, err := (&http.Client{Timeout: 90 * time.Second}).Get(u)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}

func waitTCP(p *proc, port int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return errors.New("exited during startup")
		default:
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("port %d not open after %s", port, timeout)
}

func freePort() int {
	port, err := daemon.FreePort()
	if err != nil {
		log.Fatal(err)
	}
	return port
}

// profileWhile fetches a CPU profile of secs seconds from Caddy's admin
// endpoint while load runs, and returns pprof's top functions.
func profileWhile(admin, secs int, load func() error) (string, error) {
	var prof []byte
	done := make(chan struct{})
	go func() {
		defer close(done)
		prof = fetch(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", admin, secs))
	}()
	time.Sleep(200 * time.Millisecond)
	err := load()
	<-done
	if err != nil {
		return "", err
	}
	return pprofTop(prof), nil
}

func pprofTop(prof []byte, extra ...string) string {
	if len(prof) == 0 {
		return "(no profile)"
	}
	f, err := os.CreateTemp("", "mailauth-prof-")
	if err != nil {
		return err.Error()
	}
	defer os.Remove(f.Name())
	f.Write(prof)
	f.Close()
	var out strings.Builder
	for _, mode := range [][]string{{"-top"}, {"-top", "-cum"}} {
		args := append([]string{"tool", "pprof", "-nodecount=22"}, mode...)
		args = append(append(args, extra...), f.Name())
		b, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			return fmt.Sprintf("pprof: %v\n%s", err, b)
		}
		out.Write(b)
		out.WriteString("\n")
	}
	return out.String()
}

// cpuTicks is utime+stime of a process, in clock ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; fields count from after ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st, nil
}

// clockTicks is USER_HZ, 100 on every Linux that Go supports.
const clockTicks = 100

func rss(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// ---- wrk -------------------------------------------------------------------

type wrkResult struct {
	rps       float64
	p50, p99  float64 // milliseconds
	requests  int64
	non2xx3xx int64
	errors    int64
	hist      histogram // only with a script that prints it
}

// histogram counts requests by latency in µs.
type histogram map[int64]int64

func (h histogram) add(o histogram) {
	for us, n := range o {
		h[us] += n
	}
}

// percentile is the latency in ms below which p % of the requests fall.
func (h histogram) percentile(p float64) float64 {
	us := slices.Sorted(maps.Keys(h))
	var total int64
	for _, n := range h {
		total += n
	}
	rank := int64(math.Ceil(p / 100 * float64(total)))
	var seen int64
	for _, u := range us {
		if seen += h[u]; seen >= rank {
			return float64(u) / 1000
		}
	}
	return 0
}

func runWrk(d time.Duration, conns int, args ...string) (wrkResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	threads := min(2, conns)
	full := append([]string{"-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns), "-d", fmt.Sprintf("%ds", int(d.Seconds())), "--latency", "--timeout", "5s"}, args...)
	out, err := exec.CommandContext(ctx, "wrk", full...).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w\n%s", strings.Join(full, " "), err, out)
	}
	return parseWrk(string(out))
}

var (
	rpsRE    = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	pctRE    = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$`)
	reqsRE   = regexp.MustCompile(`(\d+) requests in`)
	non2xxRE = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	sockRE   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	histRE   = regexp.MustCompile(`(?m)^hist (\d+) (\d+)$`)
)

func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := rpsRE.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk output without Requests/sec:\n%s", out)
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	for _, p := range pctRE.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(p[2], 64)
		switch p[3] {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		if p[1] == "50" {
			r.p50 = v
		} else {
			r.p99 = v
		}
	}
	if m := reqsRE.FindStringSubmatch(out); m != nil {
		r.requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := non2xxRE.FindStringSubmatch(out); m != nil {
		r.non2xx3xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	for _, m := range histRE.FindAllStringSubmatch(out, -1) {
		us, _ := strconv.ParseInt(m[1], 10, 64)
		n, _ := strconv.ParseInt(m[2], 10, 64)
		if r.hist == nil {
			r.hist = histogram{}
		}
		r.hist[us] += n
	}
	if m := sockRE.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.errors += n
		}
	}
	return r, nil
}

// ---- statistics ----------------------------------------------------------------

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentiles returns p50 and p99 of xs.
func percentiles(xs []float64) [2]float64 {
	if len(xs) == 0 {
		return [2]float64{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return [2]float64{s[len(s)/2], s[min(len(s)-1, len(s)*99/100)]}
}

func field(rs []wrkResult, f func(wrkResult) float64) float64 {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = f(r)
	}
	return median(xs)
}
