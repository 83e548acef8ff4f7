package main

import (
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// S is login-start latency and RSS on stores pre-filled with -sizes
// pending logins. What it compares is one server at each size in the same
// conditions, so:
//
//   - Every store is filled first, and then everything is synced to disk,
//     so that the kernel's writeback of a pre-fill (about 350 MiB of
//     tables at 1M) is not left to happen during a measurement.
//   - One Caddy per store starts, and each is left until its Badger has
//     had no compaction running for a few seconds: a server that holds a
//     million pending logins has been up for a while, and is not in the
//     middle of digesting a bulk load. (The pre-fill flattens the tree, so
//     this usually takes settleQuiet and no more.)
//   - The sizes are measured in interleaved rounds, each round starting
//     with the next size in turn, as for A, B and C, and a size's latency
//     percentiles are over all its login starts in all rounds (wrk prints
//     its latency histogram, and the rounds' histograms are merged). At
//     these login rates Badger flushes its 16 MiB memtable to a level-0
//     table every ten seconds or so of load, at any store size, and the
//     flush holds up some login starts for tens of milliseconds: a
//     five-second run that catches one has a p99 several times that of a
//     run that does not. With one such run per size, one size after the
//     other, the p99 ratio of 1M to 1k was a matter of which runs caught a
//     flush, and swung between 1.03 and 8.7 from one report to the next;
//     over all the rounds, each size has its share of flushes.

const scaleCaddyfile = `{
	admin 127.0.0.1:%[1]d
	auto_https off
	persist_config off
	mailauth {
		store badger %[2]s
		mail_server mailpit {
			host 127.0.0.1
			port %[3]d
			tls none
			from "Bench Gateway <gateway@bench.test>"
		}
		directory staff local {
			user alice {
				email alice@bench.test
			}
		}
		profile daily {
			type user
			server http://127.0.0.1:%[4]d
			link_expiration 15m
			mail_servers mailpit
			fallback staff
		}
	}
}

http://127.0.0.1:%[4]d {
	bind 127.0.0.1
	mailauth {
		default_profile daily
	}
	respond "app" 200
}
`

// scaleConns is the wrk concurrency for the scale runs: light, so the
// latency is the cost of a login rather than queueing.
const scaleConns = 4

// A Caddy has settled when its Badger has had no compaction running for
// settleQuiet (Badger's compactors first look after a random delay of up
// to a second, then every 50 ms); it is measured anyway after settleMax.
const (
	settleQuiet = 3 * time.Second
	settleMax   = 3 * time.Minute
)

type scaleResult struct {
	size     int
	dir      string
	prefill  time.Duration
	settle   time.Duration // from start until Badger was quiet
	settled  bool
	disk     int64
	runs     []wrkResult
	hist     histogram // the latencies of all runs
	tables   []int     // tables Badger wrote during each run
	rssStart int64
	rssEnd   int64
}

func (rep *report) scale(tmp string, mp *mailpit) error {
	script := filepath.Join(tmp, "login-hist.lua")
	if err := writeLoginHistScript(script); err != nil {
		return err
	}
	type server struct {
		*scaleResult
		c     *proc
		admin int
		site  string
	}
	var servers []*server
	defer func() {
		for _, s := range servers {
			if s.c != nil {
				s.c.stop()
			}
		}
	}()
	for _, f := range strings.Split(*sizesFlag, ",") {
		size, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("-sizes: %w", err)
		}
		dir := filepath.Join(tmp, fmt.Sprintf("scale-%d", size))
		start := time.Now()
		cmd := exec.Command(*prefillBin, "-dir", dir, "-n", strconv.Itoa(size))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("prefill %d: %w", size, err)
		}
		log.Print(strings.TrimSpace(string(out)))
		servers = append(servers, &server{scaleResult: &scaleResult{size: size, dir: dir, prefill: time.Since(start), disk: dirSize(dir), hist: histogram{}}})
	}
	syscall.Sync()

	for _, s := range servers {
		admin, port := freePort(), freePort()
		c, err := startCaddy(tmp, fmt.Sprintf("caddy-scale-%d", s.size), fmt.Sprintf(scaleCaddyfile, admin, s.dir, mp.smtp, port), port)
		if err != nil {
			return err
		}
		s.c, s.admin, s.site = c, admin, fmt.Sprintf("http://127.0.0.1:%d/.mailauth/login", port)
		s.rssStart, _ = rss(c.cmd.Process.Pid)
	}
	for _, s := range servers {
		s.settle, s.settled = settle(s.admin, settleMax)
		if !s.settled {
			log.Printf("scale %s: Badger still compacting after %s; measuring anyway", sizeName(s.size), settleMax)
		}
		if _, err := runWrk(time.Second, scaleConns, "-s", script, s.site); err != nil {
			return fmt.Errorf("scale %s warm-up: %w", sizeName(s.size), err)
		}
	}
	for r := range *rounds {
		for i := range servers {
			s := servers[(r+i)%len(servers)]
			last := newestTable(s.dir)
			res, err := runWrk(*loginDur, scaleConns, "-s", script, s.site)
			if err != nil {
				return fmt.Errorf("scale %s round %d: %w", sizeName(s.size), r+1, err)
			}
			if res.non2xx3xx > 0 || res.errors > 0 {
				return fmt.Errorf("scale %s round %d: %d non-2xx/3xx answers, %d socket errors", sizeName(s.size), r+1, res.non2xx3xx, res.errors)
			}
			tables := tablesSince(s.dir, last)
			log.Printf("round %d S %s: %.0f logins/s p50 %.2f ms p99 %.2f ms, %d tables written", r+1, sizeName(s.size), res.rps, res.p50, res.p99, tables)
			s.runs = append(s.runs, res)
			s.hist.add(res.hist)
			s.tables = append(s.tables, tables)
		}
	}
	for _, s := range servers {
		s.rssEnd, _ = rss(s.c.cmd.Process.Pid)
		rep.scaleRuns = append(rep.scaleRuns, *s.scaleResult)
	}
	last := servers[len(servers)-1]
	if ratio := rep.scaleRatio(len(rep.scaleRuns) - 1); last.rssEnd >= 512<<20 || ratio > 2 {
		rep.profileS, _ = profileWhile(last.admin, 5, func() error {
			_, err := runWrk(6*time.Second, scaleConns, "-s", script, last.site)
			return err
		})
		rep.heapS = fetch(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap", last.admin))
	}
	return nil
}

// scaleRatio is the p99 of size i over that of the first size, each over
// all the login starts of its rounds.
func (rep *report) scaleRatio(i int) float64 {
	return rep.scaleRuns[i].hist.percentile(99) / rep.scaleRuns[0].hist.percentile(99)
}

// settle waits until the Badger of the Caddy with the given admin port has
// had no compaction running for settleQuiet, or limit has passed, and
// returns how long it waited and whether Badger became quiet. It reads
// Badger's expvar badger_compaction_current_num_lsm (tables in running
// compactions) from Caddy's /debug/vars.
func settle(admin int, limit time.Duration) (time.Duration, bool) {
	start := time.Now()
	quietSince := start
	for time.Since(start) < limit {
		n, err := compactingTables(admin)
		if err != nil {
			log.Printf("settle: %v; not waiting", err)
			return time.Since(start), false
		}
		if n > 0 {
			quietSince = time.Now()
		} else if time.Since(quietSince) >= settleQuiet {
			return time.Since(start), true
		}
		time.Sleep(250 * time.Millisecond)
	}
	return time.Since(start), false
}

func compactingTables(admin int) (int64, error) {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/debug/vars", admin))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var vars struct {
		Compacting *int64 `json:"badger_compaction_current_num_lsm"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&vars); err != nil {
		return 0, err
	}
	if vars.Compacting == nil {
		return 0, fmt.Errorf("no badger_compaction_current_num_lsm in /debug/vars")
	}
	return *vars.Compacting, nil
}

// newestTable is the number of the newest SSTable in a Badger directory;
// Badger numbers its tables in the order it writes them.
func newestTable(dir string) int {
	n := 0
	for _, id := range tableIDs(dir) {
		n = max(n, id)
	}
	return n
}

// tablesSince counts the SSTables in dir numbered above last: those that
// a memtable flush or a compaction has written since.
func tablesSince(dir string, last int) int {
	n := 0
	for _, id := range tableIDs(dir) {
		if id > last {
			n++
		}
	}
	return n
}

func tableIDs(dir string) []int {
	ents, _ := os.ReadDir(dir)
	var ids []int
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), ".sst"); ok {
			if id, err := strconv.Atoi(name); err == nil {
				ids = append(ids, id)
			}
		}
	}
	return ids
}
