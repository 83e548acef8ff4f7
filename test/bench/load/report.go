package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"time"
)

// report collects every figure of one run.
type report struct {
	started, finished time.Time
	sessionMinted     bool
	runs              map[string][]wrkResult
	e1, e1Floor, e2   *pollResult
	scaleRuns         []scaleResult
	goBench           string
	profileB          string
	profileD          string
	profileS          string
	heapS             []byte
	stormRuns         []stormResult
}

func (rep *report) maxSize() int {
	m := 0
	for _, f := range strings.Split(*sizesFlag, ",") {
		var n int
		fmt.Sscan(strings.TrimSpace(f), &n)
		m = max(m, n)
	}
	return m
}

// ratio is the median over rounds of scenario/A, each round against the A
// of the same round.
func (rep *report) ratio(name string) float64 {
	a, s := rep.runs["A"], rep.runs[name]
	xs := make([]float64, 0, len(s))
	for i := range min(len(a), len(s)) {
		xs = append(xs, s[i].rps/a[i].rps)
	}
	return median(xs)
}

type row struct{ measure, result, target, verdict string }

// firstRun holds the headline figures of the first `make bench` (2026-11-29,
// same machine), before the store and bench fixes, so that each report shows
// what changed. In that run A sent no cookie at all (B and C did), rounds
// always ran A, B, C in that order, the scale stores were left uncompacted,
// and Badger ran with its default caches.
var firstRun = map[string]string{
	"A bare reverse_proxy":                      "7923 req/s",
	"B valid session":                           "0.935 × A",
	"C invalid cookie → 302":                    "3.230 × A",
	"D login start, SMTP up":                    "188 logins/s, p99 285 ms",
	"D login start, SMTP down":                  "170 logins/s, p99 191 ms",
	"D p99 down / up":                           "0.67",
	"E1 1000 browsers polling status every 2 s": "15.5 % of one core, idle not subtracted",
	"S 1k pending logins":                       "p99 43.9 ms; RSS 187 MiB",
	"S 10k pending logins":                      "p99 48.3 ms; RSS 187 MiB",
	"S 100k pending logins":                     "p99 60.9 ms; RSS 177 MiB",
	"S 1M pending logins":                       "p99 405 ms (9.23 × 1k); RSS 769 MiB",
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func (rep *report) rows() []row {
	var rs []row
	for _, b := range parseGoBench(rep.goBench) {
		rs = append(rs, row{"go " + b.name, b.figures, "", ""})
	}
	rps := func(r wrkResult) float64 { return r.rps }
	p50 := func(r wrkResult) float64 { return r.p50 }
	p99 := func(r wrkResult) float64 { return r.p99 }
	if a := rep.runs["A"]; len(a) > 0 {
		rs = append(rs, row{"A bare reverse_proxy", fmt.Sprintf("%.0f req/s, p99 %.2f ms", field(a, rps), field(a, p99)), "the limit (1.00)", ""})
		rb, rc := rep.ratio("B"), rep.ratio("C")
		rs = append(rs,
			row{"B valid session", fmt.Sprintf("%.0f req/s, p99 %.2f ms, **%.3f × A**", field(rep.runs["B"], rps), field(rep.runs["B"], p99), rb), "≥ 0.97 × A", verdict(rb >= 0.97)},
			row{"C invalid cookie → 302", fmt.Sprintf("%.0f req/s, p99 %.2f ms, **%.3f × A**", field(rep.runs["C"], rps), field(rep.runs["C"], p99), rc), "≥ 0.9 × A", verdict(rc >= 0.9)})
	}
	if up, down := rep.runs["D up"], rep.runs["D down"]; len(up) > 0 {
		upRate, downRate := field(up, rps), field(down, rps)
		pUp, pDown := field(up, p99), field(down, p99)
		rs = append(rs,
			row{"D login start, SMTP up", fmt.Sprintf("%.0f logins/s, p50 %.2f ms, p99 %.2f ms", upRate, field(up, p50), pUp), "≥ 300 logins/s", verdict(upRate >= 300)},
			row{"D login start, SMTP down", fmt.Sprintf("%.0f logins/s, p50 %.2f ms, p99 %.2f ms", downRate, field(down, p50), pDown), "≥ 300 logins/s", verdict(downRate >= 300)},
			row{"D p99 down / up", fmt.Sprintf("%.2f", pDown/pUp), "≤ 1.20", verdict(pDown <= 1.2*pUp)})
	}
	if e := rep.e1; e != nil {
		rs = append(rs, row{fmt.Sprintf("E1 %d browsers polling status every 2 s", *pollers),
			fmt.Sprintf("**%.1f %% of one core** (%.1f %% less %.1f %% idle), %.0f polls/s, %.0f µs of CPU a poll, p50 %.2f ms, p99 %.2f ms, %d failed; %s", e.net(), e.gross, e.idle, e.rate, e.cpuPerAnswer(), e.lat[0], e.lat[1], e.failures, rep.e1Floor.floor()),
			"< 10 % of one core", verdict(e.net() < pollTarget)})
	}
	if e := rep.e2; e != nil {
		rs = append(rs, row{fmt.Sprintf("E2 %d browsers long-polling status (wait=pending)", *pollers),
			fmt.Sprintf("**%.1f %% of one core** (%.1f %% less %.1f %% idle), %.1f answers/s, held p50 %.1f s, %d failed", e.net(), e.gross, e.idle, e.rate, e.lat[0]/1000, e.failures),
			"< 10 % of one core", verdict(e.net() < pollTarget)})
	}
	for i, s := range rep.scaleRuns {
		target, v := "", ""
		if s.size == rep.maxSize() && i > 0 {
			ratio := rep.scaleRatio(i)
			target = fmt.Sprintf("p99 ≤ 2 × %s's; RSS < 512 MiB", sizeName(rep.scaleRuns[0].size))
			v = fmt.Sprintf("latency %s (%.2f ×), RSS %s", verdictWord(ratio <= 2), ratio, verdictWord(s.rssEnd < 512<<20))
		}
		rs = append(rs, row{
			fmt.Sprintf("S %s pending logins", sizeName(s.size)),
			fmt.Sprintf("login p50 %.2f ms, p99 %.2f ms, %.0f/s; RSS %d MiB (%d at start); store %d MiB", s.hist.percentile(50), s.hist.percentile(99), field(s.runs, rps), s.rssEnd>>20, s.rssStart>>20, s.disk>>20),
			target, v,
		})
	}
	return rs
}

func verdictWord(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func sizeName(n int) string {
	switch {
	case n >= 1000000 && n%1000000 == 0:
		return fmt.Sprintf("%dM", n/1000000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func (rep *report) table() string {
	var b strings.Builder
	b.WriteString("| Measure | Result (medians over rounds) | Target | Verdict | First run (2026-11-29) |\n|---|---|---|---|---|\n")
	for _, r := range rep.rows() {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r.measure, r.result, r.target, r.verdict, firstRun[r.measure])
	}
	return b.String()
}

func (rep *report) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# Benchmarks\n\n")
	p("Generated by `make bench` on %s (%s of run time). Do not edit by hand: run `make bench` again.\n\n",
		rep.started.UTC().Format("2006-01-02 15:04 MST"), rep.finished.Sub(rep.started).Round(time.Second))
	p("## Machine\n\n")
	p("- CPU: %s, %d cores (`nproc`)\n", cpuModel(), runtime.NumCPU())
	p("- Memory: %s\n", memTotal())
	p("- Kernel: %s\n", cmdOut("uname", "-sr"))
	p("- Go: %s\n", cmdOut("go", "version"))
	p("- Caddy: %s (built with `go build -o bin/caddy ./cmd/caddy`, no -race)\n", cmdOut(*caddyBin, "version"))
	p("- wrk: %s\n", firstLine(cmdOut("wrk", "-v")))
	p("- The machine is shared with other work, so absolute figures are noisy; the ratios compare scenarios measured in the same interleaved rounds.\n\n")
	p("## Commands\n\n`make bench` runs:\n\n```sh\n%s\n```\n\n", strings.ReplaceAll(strings.TrimPrefix(*commands, "make bench;"), ";", "\n"))
	p("## Results\n\n%s\n", rep.table())
	p(`How each figure is made:

- **Go benchmarks**: `+"`go test -run '^$' -bench . -benchmem`"+` on approval, caddymodule and store. The authenticated path's allocations are the two placeholder values boxed into the replacer's map (and the session's strings); BenchmarkNextHandlerOnly is the same call without mailauth.
- **A, B, C**: one Caddy (admin on loopback) with three loopback sites: A is `+"`reverse_proxy`"+` to a `+"`respond`"+` site in the same process; B is the same site config with `+"`mailauth`"+` before `+"`reverse_proxy`"+`, hit with a session cookie minted once through the real flow (login POST, link read from mailpit's API, confirm POST, complete POST); C sends a forged cookie with `+"`Accept: text/html`"+` and gets the 302 to the login page (no upstream trip). A sends a dummy cookie of the same size as B's session cookie, so the requests differ only in whether mailauth checks them. `+"`wrk -t2 -c%d -d%s --latency`"+`, %d interleaved rounds of A, B and C, each round starting with the next scenario in turn (plus one untimed warm-up run each). Ratios are the median of the per-round ratios to the A of the same round.
- **D**: a second Caddy with two sites, one whose profile mails through mailpit (up) and one whose mail server is a loopback port nothing listens on (down: every attempt is refused, mail waits in the outbox and retries). `+"`wrk -t2 -c%d -d%s -s login.lua`"+` POSTs `+"`identity=alice`"+` to `+"`/.mailauth/login`"+`; every answer must be the 303. %d interleaved rounds of up and down. Every login is durable (Badger with SyncWrites) and each one also writes a link token and an outbox message in the background.
- **E1, E2**: %[7]d pending logins on the A/B/C Caddy (unknown users, so no mail), each watched by its own Go client with its own keep-alive connection; every answer must be a 200 saying `+"`pending`"+`. E1 is the target's definition: `+"`GET /.mailauth/status`"+` every 2 s, the browsers spread evenly over the period. Its floor is the same number of browsers, with connections of their own, polling a site of the same Caddy that answers the same JSON with a plain `+"`respond`"+`: what Caddy, Go's HTTP server and the kernel cost at that rate, whatever the handler. After two periods of warm-up each, E1 and its floor take turns, %[13]d each, with the CPU measured over %[8]s per side in all. E2 is what the waiting page (wait.js) does now: `+"`GET /.mailauth/status?wait=pending`"+` in a loop, each held by Caddy until the login changes or 25 s pass and sent again as soon as it is answered (client timeout 35 s), the browsers spread over one hold, measured over %[8]s after 27 s of warm-up. The cost is Caddy's utime+stime from /proc/<pid>/stat, less Caddy's idle CPU over a window half as long with nobody polling, measured just before E1; CPU a poll is that net cost over the polls answered.
- **S**: `+"`test/bench/prefill`"+` writes N pending logins with their link tokens, and N sessions (the records approval writes, read back through store.OpenBadger as a check) into a fresh store per size and flattens its LSM tree; then everything is synced to disk, so that the kernel's writeback of a pre-fill cannot land in a measurement. One Caddy per store starts and is left until its Badger has had no compaction running for %[9]s (a server with a million pending logins has been up for a while; it is not digesting a bulk load), gets a 1 s warm-up, and then `+"`wrk -t2 -c%[10]d -d%[11]s -s login.lua`"+` posts login starts in %[12]d interleaved rounds over the sizes, each round starting with the next size in turn. A size's p50 and p99 are over all its login starts in all rounds (wrk's latency histograms, merged), login starts per second the median over the rounds; the ratio is the p99 of the largest size over that of the smallest. All rounds count, rather than one run per size, because Badger flushes its memtable every ten seconds or so of this load, at any size, and a run that catches a flush has a p99 several times higher than one that does not (see the Rounds table). RSS is VmRSS from /proc at start and after the rounds. Session records exist for the admin API's listing only: verifying a session cookie never reads them.

`, wrkConns, *dur, *rounds, loginConns, *loginDur, *rounds, *pollers, *pollWindow, settleQuiet, scaleConns, *loginDur, *rounds, pollTurns)
	p("## Rounds\n\n| Scenario | req/s per round | p99 ms per round |\n|---|---|---|\n")
	for _, name := range []string{"A", "B", "C", "D up", "D down"} {
		if len(rep.runs[name]) == 0 {
			continue
		}
		var rps, p99 []string
		for _, r := range rep.runs[name] {
			rps = append(rps, fmt.Sprintf("%.0f", r.rps))
			p99 = append(p99, fmt.Sprintf("%.2f", r.p99))
		}
		p("| %s | %s | %s |\n", name, strings.Join(rps, ", "), strings.Join(p99, ", "))
	}
	for _, s := range rep.scaleRuns {
		var rps, p99 []string
		for i, r := range s.runs {
			rps = append(rps, fmt.Sprintf("%.0f", r.rps))
			flush := ""
			if s.tables[i] > 0 {
				flush = "*"
			}
			p99 = append(p99, fmt.Sprintf("%.2f%s", r.p99, flush))
		}
		p("| S %s | %s | %s |\n", sizeName(s.size), strings.Join(rps, ", "), strings.Join(p99, ", "))
	}
	p("\n")
	if len(rep.scaleRuns) > 0 {
		p("S rounds marked * are those in which Badger wrote a table (a memtable flush, or a compaction), which holds up some login starts whatever the size of the store.\n\n")
	}
	if len(rep.scaleRuns) > 0 {
		p("Pre-fill times, and the time each Caddy took to settle: ")
		for i, s := range rep.scaleRuns {
			if i > 0 {
				p(", ")
			}
			settled := ""
			if !s.settled {
				settled = ", still compacting"
			}
			p("%s in %s (settled in %s%s)", sizeName(s.size), s.prefill.Round(100*time.Millisecond), s.settle.Round(100*time.Millisecond), settled)
		}
		p(".\n\n")
	}
	if len(rep.stormRuns) > 0 {
		p("%s\n", stormMarkdown(rep.stormRuns))
	}
	profiles := []struct{ title, body string }{
		{"B: Caddy with mailauth and a valid session (6 s during wrk)", rep.profileB},
		{"D: login starts, SMTP up (5 s during wrk)", rep.profileD},
		{"E1: status polled every 2 s (10 s)", rep.e1.prof()},
		{"E2: status long-polled (10 s)", rep.e2.prof()},
		{fmt.Sprintf("S: login starts on %s pending logins (5 s during wrk)", sizeName(rep.maxSize())), rep.profileS},
	}
	p("## CPU profiles\n\nFrom Caddy's admin endpoint (`/debug/pprof/profile`), taken apart from the measured rounds; `go tool pprof -top` and `-top -cum`.\n\n")
	for _, pr := range profiles {
		if pr.body == "" {
			continue
		}
		p("### %s\n\n```\n%s```\n\n", pr.title, trimPprof(pr.body))
	}
	if len(rep.heapS) > 0 {
		p("### Heap in use on %s pending logins\n\n```\n%s```\n\n", sizeName(rep.maxSize()), trimPprof(pprofTop(rep.heapS, "-sample_index=inuse_space")))
	}
	if rep.goBench != "" {
		p("## Go benchmark output\n\n```\n%s```\n", rep.goBench)
	}
	return b.String()
}

// trimPprof drops pprof's header lines that name temp files.
func trimPprof(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

type goBenchLine struct{ name, figures string }

var goBenchRE = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

func parseGoBench(s string) []goBenchLine {
	var out []goBenchLine
	pkg := ""
	for _, l := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(l, "pkg: "); ok {
			pkg = v[strings.LastIndexByte(v, '/')+1:]
			continue
		}
		m := goBenchRE.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		figs := strings.Fields(m[2])
		var parts []string
		for i := 0; i+1 < len(figs); i += 2 {
			parts = append(parts, figs[i]+" "+figs[i+1])
		}
		out = append(out, goBenchLine{pkg + "." + strings.TrimPrefix(m[1], "Benchmark"), strings.Join(parts, ", ")})
	}
	return out
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(v), &kb)
			return fmt.Sprintf("%d MiB", kb>>10)
		}
	}
	return "unknown"
}

func cmdOut(name string, args ...string) string {
	out, _ := exec.Command(name, args...).CombinedOutput()
	return strings.TrimSpace(string(out))
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
