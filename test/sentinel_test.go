package test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailauth/caddy-mailauth/test/mailpit"
	"github.com/mailauth/caddy-mailauth/test/redisserver"
)

// sentinelUsers is how many users the storm signs in, one login each.
const sentinelUsers = 240

// sentinelCaddyfile is defaultCaddyfile on a Sentinel-managed Redis, with
// sentinelUsers users and no per-IP limit (the storm comes from one
// address).
func sentinelCaddyfile(port, admin, smtp int, sentinels []string, upstream string) string {
	var users strings.Builder
	for i := range sentinelUsers {
		fmt.Fprintf(&users, "\t\t\tuser u%03d {\n\t\t\t\temail u%03d@example.test\n\t\t\t}\n", i, i)
	}
	return fmt.Sprintf(`{
	admin 127.0.0.1:%[2]d
	auto_https off
	mailauth {
		store redis {
			sentinel mailauth %[4]s
		}
		session_lifetime 1h
		rate_limit {
			login_per_ip 100000/1m
		}
		mail_server local {
			host 127.0.0.1
			port %[3]d
			tls none
			from "Access Gateway <gateway@example.test>"
		}
		directory staff local {
%[6]s		}
		profile daily {
			type user
			server http://localhost:%[1]d
			link_expiration 15m
			mail_servers local
			fallback staff
		}
	}
}

http://:%[1]d {
	bind 127.0.0.1
	mailauth {
		default_profile daily
	}
	reverse_proxy %[5]s {
		header_up X-Remote-User {http.auth.user.id}
	}
}
`, port, admin, smtp, strings.Join(sentinels, " "), upstream, users.String())
}

// waitUntil polls cond every 50ms for up to d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSentinelFailoverMidStormResumesSignInsAndLosesNoQueuedMail: a
// master, a replica and three sentinels (quorum 2) from Debian's packages;
// the master is killed (SIGKILL) while logins pour in. Sentinel promotes
// the replica, the same Caddy goes on signing people in without a restart,
// and every login that was answered with the waiting page gets its mail:
// what was queued before the crash had reached the replica.
func TestSentinelFailoverMidStormResumesSignInsAndLosesNoQueuedMail(t *testing.T) {
	began := time.Now()
	master := redisserver.Start(t)
	replica := redisserver.StartReplicaOf(t, master)
	ctx := context.Background()
	rc := redis.NewClient(&redis.Options{Addr: replica.Addr()})
	t.Cleanup(func() { rc.Close() })
	waitUntil(t, 10*time.Second, "the replica to sync", func() bool {
		info, _ := rc.Info(ctx, "replication").Result()
		return strings.Contains(info, "master_link_status:up")
	})
	var sentinels []string
	var clients []*redis.SentinelClient
	for range 3 {
		s := redisserver.StartSentinel(t, "mailauth", master, 2)
		sentinels = append(sentinels, s.Addr())
		c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr()})
		t.Cleanup(func() { c.Close() })
		clients = append(clients, c)
	}
	// A failover needs every sentinel to know the replica and a quorum of
	// the others (they announce themselves every 2 s).
	waitUntil(t, 20*time.Second, "the sentinels to find the replica and each other", func() bool {
		for _, c := range clients {
			reps, err1 := c.Replicas(ctx, "mailauth").Result()
			sens, err2 := c.Sentinels(ctx, "mailauth").Result()
			if err1 != nil || err2 != nil || len(reps) != 1 || len(sens) != 2 {
				return false
			}
		}
		return true
	})
	setup := time.Since(began)

	mail := mailpit.Start(t)
	upstream := strings.TrimPrefix(newUpstream(t, http.HandlerFunc(echoIdentity)).URL, "http://")
	e := &env{t: t, mail: mail, Port: freePort(t), AdminPort: freePort(t)}
	e.Caddyfile = sentinelCaddyfile(e.Port, e.AdminPort, mail.SMTPPort, sentinels, upstream)
	e.caddy = startCaddy(t, e.Caddyfile, e.Port)

	// The storm: 8 browsers at a time, each login retried until the
	// gateway answers with the waiting page, as a user would.
	var (
		mu         sync.Mutex
		answered   = map[string]*browser{}
		errorsSeen int
		killedAt   time.Time
		lastError  time.Time
	)
	users := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range users {
				id := fmt.Sprintf("u%03d", i)
				b := newBrowser(t)
				deadline := time.Now().Add(30 * time.Second)
				for {
					r := b.post(e.URL("/.mailauth/login"), url.Values{"identity": {id}, "return": {"/app"}})
					mu.Lock()
					if r.Status == http.StatusSeeOther {
						answered[id] = b
						mu.Unlock()
						break
					}
					errorsSeen++
					lastError = time.Now()
					mu.Unlock()
					if time.Now().After(deadline) {
						t.Errorf("login of %s still failing 30s on (last %d)", id, r.Status)
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		})
	}
	for i := range sentinelUsers {
		if i == sentinelUsers/3 {
			mu.Lock()
			killedAt = time.Now()
			mu.Unlock()
			master.Kill()
		}
		users <- i
	}
	close(users)
	wg.Wait()
	if t.Failed() {
		return
	}
	mu.Lock()
	resumed := lastError.Sub(killedAt)
	mu.Unlock()

	// Every answered login gets its mail, those queued before the crash
	// included.
	want := len(answered)
	if want != sentinelUsers {
		t.Fatalf("%d of %d logins answered", want, sentinelUsers)
	}
	var missing []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := map[string]bool{}
		_ = got
		for _, m := range mail.Messages(t) {
			for _, to := range m.To {
				got[to] = true
			}
		}
		missing = missing[:0]
		for id := range answered {
			if !got[id+"@example.test"] {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d answered logins got no mail within 30s: %v", len(missing), want, missing)
		}
		time.Sleep(100 * time.Millisecond)
	}
	drained := time.Since(killedAt)

	// Sign-ins complete on the promoted master: a login from after the
	// crash, and one from before it.
	for _, id := range []string{"u000", fmt.Sprintf("u%03d", sentinelUsers-1)} {
		msg := mail.WaitForMessage(t, id+"@example.test", 5*time.Second)
		if body := confirmAndComplete(t, e, answered[id], linkIn(t, msg.Text)); !strings.Contains(body, fmt.Sprintf("user=%q", id)) {
			t.Errorf("%s's sign-in after the failover: %s", id, body)
		}
	}
	role, _ := rc.Do(ctx, "ROLE").Slice()
	if len(role) == 0 || role[0] != "master" {
		t.Errorf("the replica's role after the failover is %v; want master", role)
	}
	t.Logf("setup %v; logins failed for %v after the master was killed (%d failed tries, each retried); all %d mails delivered %v after the kill",
		setup.Round(time.Millisecond), resumed.Round(time.Millisecond), errorsSeen, want, drained.Round(time.Millisecond))
}
