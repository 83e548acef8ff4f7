// Package storetest is the conformance suite for store backends. A backend
// passes it by calling Run from its own tests, and reports its speed next to
// the others by calling Bench.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailauth/caddy-mailauth/store"
)

// ttl is the shortest expiry the suite uses. Backends may round expiry up
// to whole seconds, so the suite waits expiryWait before expecting a key gone.
const (
	ttl        = time.Second
	expiryWait = 2*ttl + 200*time.Millisecond
)

// Run checks that the stores made by open follow the store.Store contract.
// open is called once per subtest and must return an empty store; it
// should register closing the store with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"PutThenGetReturnsValue", putThenGetReturnsValue},
		{"PutCopiesValue", putCopiesValue},
		{"GetReturnsCopy", getReturnsCopy},
		{"PutOverwritesValue", putOverwritesValue},
		{"GetMissingKeyIsNotFound", getMissingKeyIsNotFound},
		{"KeysSharingAPrefixAreDistinct", keysSharingAPrefixAreDistinct},
		{"BinaryKeysAndValuesRoundTrip", binaryKeysAndValuesRoundTrip},
		{"PutManyWritesEveryKey", putManyWritesEveryKey},
		{"DeleteRemovesKey", deleteRemovesKey},
		{"DeleteMissingKeyIsNotAnError", deleteMissingKeyIsNotAnError},
		{"TakeReturnsValueAndRemovesKey", takeReturnsValueAndRemovesKey},
		{"TakeTwiceFailsSecondTime", takeTwiceFailsSecondTime},
		{"TakeMissingKeyIsNotFound", takeMissingKeyIsNotFound},
		{"ConcurrentTakesHaveExactlyOneWinner", concurrentTakesHaveExactlyOneWinner},
		{"UpdateCreatesMissingKey", updateCreatesMissingKey},
		{"UpdateModifiesExistingValue", updateModifiesExistingValue},
		{"UpdateWritesNothingWhenFnFails", updateWritesNothingWhenFnFails},
		{"ConcurrentUpdatesLoseNothing", concurrentUpdatesLoseNothing},
		{"EnqueuedMessageIsClaimedThenAcked", enqueuedMessageIsClaimedThenAcked},
		{"EnqueueCopiesPayload", enqueueCopiesPayload},
		{"ClaimedMessageReturnsWhenLeaseEnds", claimedMessageReturnsWhenLeaseEnds},
		{"ClaimReturnsOldestDueFirstUpToMax", claimReturnsOldestDueFirstUpToMax},
		{"RetriedMessageWaitsAndCountsAttempts", retriedMessageWaitsAndCountsAttempts},
		{"ScheduledMessageWaitsUntilDue", scheduledMessageWaitsUntilDue},
		{"DueHighPriorityMessagesAreClaimedBeforeLowOnes", dueHighPriorityMessagesAreClaimedBeforeLowOnes},
		{"PostponedMessageWaitsWithoutCountingAnAttempt", postponedMessageWaitsWithoutCountingAnAttempt},
		{"ReenqueueingMovesAMessageBetweenPriorities", reenqueueingMovesAMessageBetweenPriorities},
		{"RetryMissingMessageIsNotFound", retryMissingMessageIsNotFound},
		{"AckMissingMessageIsNotAnError", ackMissingMessageIsNotAnError},
		{"ConcurrentClaimersNeverShareAMessage", concurrentClaimersNeverShareAMessage},
		{"OutboxLenCountsQueuedAndClaimed", outboxLenCountsQueuedAndClaimed},
		{"OutboxAndKeysDoNotCollide", outboxAndKeysDoNotCollide},
		{"Expiry", expiry},
		{"ScanFindsLiveKeysUnderPrefix", scanFindsLiveKeysUnderPrefix},
		{"ScanStopsWhenFnSaysSo", scanStopsWhenFnSaysSo},
		{"AppendNumbersRecordsFromOne", appendNumbersRecordsFromOne},
		{"AppendWritesNothingWhenBuildFails", appendWritesNothingWhenBuildFails},
		{"ConcurrentAppendsFormOneChain", concurrentAppendsFormOneChain},
		{"ExpiredRecordsLeaveLogButChainGoesOn", expiredRecordsLeaveLogButChainGoesOn},
		{"PublishReachesSubscribersOfTheTopic", publishReachesSubscribersOfTheTopic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Each subtest has its own store, so they may overlap; that
			// hides the expiry wait behind the rest.
			t.Parallel()
			tt.fn(t, open(t))
		})
	}
}

func putThenGetReturnsValue(t *testing.T, s store.Store) {
	mustPut(t, s, "login/a", []byte("hello"), 0)
	expectValue(t, s, "login/a", []byte("hello"))
}

func putCopiesValue(t *testing.T, s store.Store) {
	v := []byte("hello")
	mustPut(t, s, "k", v, 0)
	copy(v, "XXXXX")
	expectValue(t, s, "k", []byte("hello"))
}

func getReturnsCopy(t *testing.T, s store.Store) {
	mustPut(t, s, "k", []byte("hello"), 0)
	got, err := s.Get(t.Context(), "k")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	copy(got, "XXXXX")
	expectValue(t, s, "k", []byte("hello"))
}

func putOverwritesValue(t *testing.T, s store.Store) {
	mustPut(t, s, "k", []byte("first"), 0)
	mustPut(t, s, "k", []byte("second"), 0)
	expectValue(t, s, "k", []byte("second"))
}

func getMissingKeyIsNotFound(t *testing.T, s store.Store) {
	expectNotFound(t, s, "missing")
}

func keysSharingAPrefixAreDistinct(t *testing.T, s store.Store) {
	mustPut(t, s, "a", []byte("1"), 0)
	mustPut(t, s, "ab", []byte("2"), 0)
	mustDelete(t, s, "a")
	expectNotFound(t, s, "a")
	expectValue(t, s, "ab", []byte("2"))
}

func binaryKeysAndValuesRoundTrip(t *testing.T, s store.Store) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	cases := map[string][]byte{
		"\x00":             all,
		"\x00\xff\n key":   {0},
		"\xff\xfe":         []byte("\x00\x00"),
		"":                 []byte("empty key"),
		"empty value":      {},
		"\x00outbox/x":     []byte("looks internal"),
		"outbox/x":         []byte("looks internal"),
		string(all[1:200]): all[:3],
	}
	for k, v := range cases {
		mustPut(t, s, k, v, 0)
	}
	for k, v := range cases {
		expectValue(t, s, k, v)
	}
	if n, err := s.OutboxLen(t.Context()); err != nil || n != 0 {
		t.Errorf("OutboxLen = %d, %v after putting keys that look internal; want 0: keys leaked into the outbox", n, err)
	}
}

func deleteRemovesKey(t *testing.T, s store.Store) {
	mustPut(t, s, "k", []byte("v"), 0)
	mustDelete(t, s, "k")
	expectNotFound(t, s, "k")
}

func deleteMissingKeyIsNotAnError(t *testing.T, s store.Store) {
	mustDelete(t, s, "missing")
}

func takeReturnsValueAndRemovesKey(t *testing.T, s store.Store) {
	mustPut(t, s, "token", []byte("v"), 0)
	got, err := s.Take(t.Context(), "token")
	if err != nil || !bytes.Equal(got, []byte("v")) {
		t.Fatalf("Take = %q, %v; want %q", got, err, "v")
	}
	expectNotFound(t, s, "token")
}

func takeTwiceFailsSecondTime(t *testing.T, s store.Store) {
	mustPut(t, s, "token", []byte("v"), time.Hour)
	if _, err := s.Take(t.Context(), "token"); err != nil {
		t.Fatalf("first Take: %v", err)
	}
	if v, err := s.Take(t.Context(), "token"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second Take = %q, %v; want ErrNotFound: a token was used twice", v, err)
	}
}

func takeMissingKeyIsNotFound(t *testing.T, s store.Store) {
	if v, err := s.Take(t.Context(), "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Take of a missing key = %q, %v; want ErrNotFound", v, err)
	}
}

func concurrentTakesHaveExactlyOneWinner(t *testing.T, s store.Store) {
	const rounds, takers = 20, 50
	for round := range rounds {
		key := "token/" + strconv.Itoa(round)
		mustPut(t, s, key, []byte(key), time.Hour)
		var (
			start   = make(chan struct{})
			wg      sync.WaitGroup
			mu      sync.Mutex
			winners int
		)
		for range takers {
			wg.Go(func() {
				<-start
				v, err := s.Take(t.Context(), key)
				switch {
				case err == nil:
					if string(v) != key {
						t.Errorf("round %d: Take returned %q; want %q", round, v, key)
					}
					mu.Lock()
					winners++
					mu.Unlock()
				case !errors.Is(err, store.ErrNotFound):
					t.Errorf("round %d: Take failed with %v; losers must get ErrNotFound", round, err)
				}
			})
		}
		close(start)
		wg.Wait()
		if winners != 1 {
			t.Fatalf("round %d: %d of %d concurrent Takes got the token; want exactly 1", round, winners, takers)
		}
	}
}

func updateCreatesMissingKey(t *testing.T, s store.Store) {
	mustUpdate(t, s, "k", 0, func(cur []byte, found bool) ([]byte, error) {
		if found || cur != nil {
			t.Errorf("Update fn got %q, found=%v for a missing key; want nil, false", cur, found)
		}
		return []byte("created"), nil
	})
	expectValue(t, s, "k", []byte("created"))
}

func updateModifiesExistingValue(t *testing.T, s store.Store) {
	mustPut(t, s, "k", []byte("old"), 0)
	mustUpdate(t, s, "k", 0, func(cur []byte, found bool) ([]byte, error) {
		if !found || string(cur) != "old" {
			t.Errorf("Update fn got %q, found=%v; want %q, true", cur, found, "old")
		}
		return append(cur, "+new"...), nil
	})
	expectValue(t, s, "k", []byte("old+new"))
}

func updateWritesNothingWhenFnFails(t *testing.T, s store.Store) {
	errAbort := errors.New("abort")
	mustPut(t, s, "k", []byte("old"), 0)
	fail := func([]byte, bool) ([]byte, error) { return []byte("new"), errAbort }
	if err := s.Update(t.Context(), "k", 0, fail); !errors.Is(err, errAbort) {
		t.Errorf("Update of an existing key returned %v; want fn's error", err)
	}
	expectValue(t, s, "k", []byte("old"))
	if err := s.Update(t.Context(), "missing", 0, fail); !errors.Is(err, errAbort) {
		t.Errorf("Update of a missing key returned %v; want fn's error", err)
	}
	expectNotFound(t, s, "missing")
}

func concurrentUpdatesLoseNothing(t *testing.T, s store.Store) {
	const writers = 20
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			<-start
			err := s.Update(t.Context(), "counter", 0, func(cur []byte, found bool) ([]byte, error) {
				n := 0
				if found {
					var err error
					if n, err = strconv.Atoi(string(cur)); err != nil {
						return nil, err
					}
				}
				return strconv.AppendInt(nil, int64(n+1), 10), nil
			})
			if err != nil {
				t.Errorf("Update by one of %d concurrent writers: %v", writers, err)
			}
		})
	}
	close(start)
	wg.Wait()
	expectValue(t, s, "counter", []byte(strconv.Itoa(writers)))
}

func enqueuedMessageIsClaimedThenAcked(t *testing.T, s store.Store) {
	ctx := t.Context()
	before := time.Now()
	mustEnqueue(t, s, "m1", []byte("mail"), 0)
	after := time.Now()
	expectOutboxLen(t, s, 1)

	items := mustClaim(t, s, time.Now(), 10, time.Minute)
	if len(items) != 1 {
		t.Fatalf("Claim returned %d messages; want the 1 enqueued", len(items))
	}
	it := items[0]
	if it.ID != "m1" || string(it.Payload) != "mail" || it.Attempts != 0 {
		t.Errorf("Claim returned ID %q, payload %q, attempts %d; want %q, %q, 0", it.ID, it.Payload, it.Attempts, "m1", "mail")
	}
	if it.EnqueuedAt.Before(before.Truncate(time.Millisecond)) || it.EnqueuedAt.After(after) {
		t.Errorf("EnqueuedAt = %v; want between %v and %v", it.EnqueuedAt, before, after)
	}

	if err := s.Ack(ctx, "m1"); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	expectOutboxLen(t, s, 0)
	if items := mustClaim(t, s, time.Now().Add(time.Hour), 10, time.Minute); len(items) != 0 {
		t.Errorf("Claim after Ack returned %v; an acknowledged message came back", ids(items))
	}
}

func enqueueCopiesPayload(t *testing.T, s store.Store) {
	p := []byte("mail")
	mustEnqueue(t, s, "m1", p, 0)
	copy(p, "XXXX")
	items := mustClaim(t, s, time.Now(), 1, time.Minute)
	if len(items) != 1 || string(items[0].Payload) != "mail" {
		t.Fatalf("Claim after changing the caller's slice returned %v; want payload %q", items, "mail")
	}
}

func claimedMessageReturnsWhenLeaseEnds(t *testing.T, s store.Store) {
	mustEnqueue(t, s, "m1", []byte("mail"), 0)
	now := time.Now()
	const lease = time.Minute
	if items := mustClaim(t, s, now, 10, lease); len(items) != 1 {
		t.Fatalf("first Claim returned %v; want [m1]", ids(items))
	}
	if items := mustClaim(t, s, now, 10, lease); len(items) != 0 {
		t.Errorf("second Claim at once returned %v; a leased message was handed out twice", ids(items))
	}
	if items := mustClaim(t, s, now.Add(lease-time.Second), 10, lease); len(items) != 0 {
		t.Errorf("Claim just before the lease ends returned %v; want nothing", ids(items))
	}
	// The worker holding the lease died without Ack or Retry.
	items := mustClaim(t, s, now.Add(lease), 10, lease)
	if len(items) != 1 || items[0].ID != "m1" || items[0].Attempts != 0 {
		t.Fatalf("Claim when the lease ends returned %+v; want m1 again with 0 attempts", items)
	}
}

func claimReturnsOldestDueFirstUpToMax(t *testing.T, s store.Store) {
	now := time.Now()
	for _, id := range []string{"a", "b", "c", "d"} {
		mustEnqueue(t, s, id, []byte(id), 0)
	}
	if items := mustClaim(t, s, now.Add(time.Second), 10, time.Minute); len(items) != 4 {
		t.Fatalf("Claim returned %v; want all 4 messages", ids(items))
	}
	for id, due := range map[string]time.Duration{"a": 4, "b": 2, "c": 3, "d": 1} {
		mustRetry(t, s, id, now.Add(due*time.Hour))
	}
	got := ids(mustClaim(t, s, now.Add(10*time.Hour), 3, time.Minute))
	if want := []string{"d", "b", "c"}; !slices.Equal(got, want) {
		t.Errorf("Claim(max 3) returned %v; want %v: oldest due first, at most max", got, want)
	}
	got = ids(mustClaim(t, s, now.Add(10*time.Hour), 3, time.Minute))
	if want := []string{"a"}; !slices.Equal(got, want) {
		t.Errorf("next Claim returned %v; want the remaining %v", got, want)
	}
}

func retriedMessageWaitsAndCountsAttempts(t *testing.T, s store.Store) {
	mustEnqueue(t, s, "m1", []byte("mail"), 0)
	now := time.Now()
	mustClaim(t, s, now, 1, time.Minute)
	for attempt := 1; attempt <= 2; attempt++ {
		at := now.Add(time.Duration(attempt) * time.Hour)
		mustRetry(t, s, "m1", at)
		if items := mustClaim(t, s, at.Add(-time.Second), 1, time.Minute); len(items) != 0 {
			t.Fatalf("Claim before the retry time returned %v; want nothing", ids(items))
		}
		items := mustClaim(t, s, at, 1, time.Minute)
		if len(items) != 1 || items[0].Attempts != attempt || string(items[0].Payload) != "mail" {
			t.Fatalf("Claim at the retry time returned %+v; want m1 with %d attempts", items, attempt)
		}
	}
}

func retryMissingMessageIsNotFound(t *testing.T, s store.Store) {
	if err := s.Retry(t.Context(), "missing", time.Now()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Retry of a missing message = %v; want ErrNotFound", err)
	}
}

func ackMissingMessageIsNotAnError(t *testing.T, s store.Store) {
	if err := s.Ack(t.Context(), "missing"); err != nil {
		t.Fatalf("Ack of a missing message = %v; want nil", err)
	}
}

func concurrentClaimersNeverShareAMessage(t *testing.T, s store.Store) {
	const messages, workers = 60, 6
	for i := range messages {
		mustEnqueue(t, s, fmt.Sprintf("m%02d", i), nil, 0)
	}
	now := time.Now()
	var (
		start = make(chan struct{})
		wg    sync.WaitGroup
		mu    sync.Mutex
		seen  = map[string]int{}
	)
	for range workers {
		wg.Go(func() {
			<-start
			for {
				items, err := s.Claim(t.Context(), now, 4, time.Hour)
				if err != nil {
					t.Errorf("Claim: %v", err)
					return
				}
				if len(items) == 0 {
					return
				}
				mu.Lock()
				for _, it := range items {
					seen[it.ID]++
				}
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	if len(seen) != messages {
		t.Errorf("workers claimed %d distinct messages; want all %d", len(seen), messages)
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("message %s was claimed %d times within one lease", id, n)
		}
	}
}

func putManyWritesEveryKey(t *testing.T, s store.Store) {
	v := []byte("one")
	if err := s.PutMany(t.Context(), []store.Entry{{Key: "many/1", Value: v}, {Key: "many/2", Value: []byte("two"), TTL: time.Hour}}); err != nil {
		t.Fatalf("PutMany: %v", err)
	}
	v[0] = 'X'
	for key, want := range map[string]string{"many/1": "one", "many/2": "two"} {
		got, err := s.Get(t.Context(), key)
		if err != nil || string(got) != want {
			t.Fatalf("after PutMany, Get(%q) = %q, %v; want %q (values are copied in)", key, got, err, want)
		}
	}
	if err := s.PutMany(t.Context(), nil); err != nil {
		t.Fatalf("PutMany of nothing: %v", err)
	}
}

func scheduledMessageWaitsUntilDue(t *testing.T, s store.Store) {
	due := time.Now().Add(time.Hour)
	if err := s.Enqueue(t.Context(), "later", []byte("escalation"), due, 2*time.Hour, store.PriorityHigh); err != nil {
		t.Fatalf("Enqueue with a due time: %v", err)
	}
	if got := mustClaim(t, s, time.Now(), 10, time.Minute); len(got) != 0 {
		t.Fatalf("a message due in an hour was claimed now: %v", got)
	}
	got := mustClaim(t, s, due, 10, time.Minute)
	if len(got) != 1 || got[0].ID != "later" || got[0].Attempts != 0 {
		t.Fatalf("at its due time the message should be claimable with no attempts, got %+v", got)
	}
}

func dueHighPriorityMessagesAreClaimedBeforeLowOnes(t *testing.T, s store.Store) {
	now := time.Now()
	// The notices are older than the links, which FIFO alone would send first.
	mustEnqueueLow(t, s, "notice1", now.Add(-2*time.Minute))
	mustEnqueueLow(t, s, "notice2", now.Add(-time.Minute))
	mustEnqueueLow(t, s, "notice-later", now.Add(time.Hour))
	mustEnqueue(t, s, "link1", []byte("link1"), 0)
	mustEnqueue(t, s, "link2", []byte("link2"), 0)
	if got := ids(mustClaim(t, s, now.Add(time.Second), 3, time.Minute)); !slices.Equal(got, []string{"link1", "link2", "notice1"}) {
		t.Fatalf("Claim(max 3) returned %v; want both due links, then the oldest due notice", got)
	}
	if got := ids(mustClaim(t, s, now.Add(time.Second), 10, time.Minute)); !slices.Equal(got, []string{"notice2"}) {
		t.Fatalf("the next Claim returned %v; want the other due notice only (one is due in an hour)", got)
	}
	// A retried notice stays low: a link queued after it still goes first.
	mustRetry(t, s, "notice2", now)
	mustEnqueue(t, s, "link3", []byte("link3"), 0)
	if got := ids(mustClaim(t, s, now.Add(2*time.Second), 1, time.Minute)); !slices.Equal(got, []string{"link3"}) {
		t.Fatalf("Claim after retrying a notice returned %v; want the link first, a retry keeps the notice's priority", got)
	}
	got := mustClaim(t, s, now.Add(2*time.Second), 10, time.Minute)
	if len(got) != 1 || got[0].ID != "notice2" || string(got[0].Payload) != "notice2" || got[0].Attempts != 1 {
		t.Fatalf("Claim returned %+v; want the retried notice with its payload and 1 attempt", got)
	}
	expectOutboxLen(t, s, 6)
}

func postponedMessageWaitsWithoutCountingAnAttempt(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustEnqueue(t, s, "m1", []byte("mail"), 0)
	mustEnqueueLow(t, s, "n1", time.Time{})
	now := time.Now()
	if got := mustClaim(t, s, now, 10, time.Minute); len(got) != 2 {
		t.Fatalf("Claim returned %v; want both messages", ids(got))
	}
	mustRetry(t, s, "m1", now)
	for _, id := range []string{"m1", "n1"} {
		if err := s.Postpone(ctx, id, now.Add(time.Minute)); err != nil {
			t.Fatalf("Postpone(%q): %v", id, err)
		}
	}
	if got := mustClaim(t, s, now.Add(59*time.Second), 10, time.Minute); len(got) != 0 {
		t.Fatalf("Claim before the postponed time returned %v; want nothing", ids(got))
	}
	got := mustClaim(t, s, now.Add(time.Minute), 10, time.Minute)
	if len(got) != 2 || got[0].ID != "m1" || got[0].Attempts != 1 || got[1].ID != "n1" || got[1].Attempts != 0 {
		t.Fatalf("Claim at the postponed time returned %+v; want m1 with its 1 retry, then n1 with 0: postponing counts no attempt and keeps priority", got)
	}
	if err := s.Ack(ctx, "m1"); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if err := s.Postpone(ctx, "m1", now); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Postpone of an acknowledged message = %v; want ErrNotFound", err)
	}
}

func reenqueueingMovesAMessageBetweenPriorities(t *testing.T, s store.Store) {
	mustEnqueueLow(t, s, "m", time.Time{})
	mustEnqueue(t, s, "m", []byte("now high"), 0)
	mustEnqueue(t, s, "h", []byte("h"), 0)
	mustEnqueueLow(t, s, "h", time.Time{})
	expectOutboxLen(t, s, 2)
	got := mustClaim(t, s, time.Now().Add(time.Second), 10, time.Minute)
	if !slices.Equal(ids(got), []string{"m", "h"}) || string(got[0].Payload) != "now high" {
		t.Fatalf("Claim returned %+v; want m (re-enqueued high) before h (re-enqueued low), each once", got)
	}
	if err := s.Ack(t.Context(), "h"); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if err := s.Retry(t.Context(), "h", time.Now()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Retry of an acknowledged low-priority message = %v; want ErrNotFound", err)
	}
	expectOutboxLen(t, s, 1)
}

func outboxLenCountsQueuedAndClaimed(t *testing.T, s store.Store) {
	expectOutboxLen(t, s, 0)
	for _, id := range []string{"a", "b", "c"} {
		mustEnqueue(t, s, id, nil, 0)
	}
	mustClaim(t, s, time.Now(), 1, time.Minute)
	expectOutboxLen(t, s, 3)
	if err := s.Ack(t.Context(), "b"); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	expectOutboxLen(t, s, 2)
}

func outboxAndKeysDoNotCollide(t *testing.T, s store.Store) {
	id := "\x00id\xff"
	mustPut(t, s, id, []byte("key"), 0)
	mustEnqueue(t, s, id, []byte("message"), 0)
	expectValue(t, s, id, []byte("key"))
	mustDelete(t, s, id)
	items := mustClaim(t, s, time.Now(), 10, time.Minute)
	if len(items) != 1 || items[0].ID != id || string(items[0].Payload) != "message" {
		t.Fatalf("Claim returned %+v; want the message with binary id %q untouched by Put/Delete of the same key", items, id)
	}
}

// expiry checks every expiry rule on one store, so that the suite waits
// out the ttl once rather than once per rule.
func expiry(t *testing.T, s store.Store) {
	v := []byte("v")
	set := func(value string) func([]byte, bool) ([]byte, error) {
		return func([]byte, bool) ([]byte, error) { return []byte(value), nil }
	}
	mustPut(t, s, "expiring", v, ttl)
	mustPut(t, s, "forever", v, 0)
	mustPut(t, s, "token", v, ttl)
	mustPut(t, s, "stale", v, ttl)
	mustPut(t, s, "updated", v, ttl)
	mustUpdate(t, s, "updated", time.Hour, set("new"))
	mustUpdate(t, s, "created", ttl, set("new"))
	mustEnqueue(t, s, "expiring", nil, ttl)
	mustEnqueue(t, s, "retried", nil, ttl)
	mustEnqueue(t, s, "forever", nil, 0)
	mustRetry(t, s, "retried", time.Now())
	before := time.Now()
	mustPut(t, s, "young", v, ttl)
	allSet := time.Now()

	time.Sleep(time.Until(before.Add(ttl - 200*time.Millisecond)))
	t.Run("KeyLivesAtLeastItsTTL", func(t *testing.T) {
		expectValue(t, s, "young", v)
	})

	time.Sleep(time.Until(allSet.Add(expiryWait)))
	t.Run("ExpiredKeyIsNotFound", func(t *testing.T) {
		expectNotFound(t, s, "expiring")
	})
	t.Run("KeyWithoutTTLDoesNotExpire", func(t *testing.T) {
		expectValue(t, s, "forever", v)
	})
	t.Run("ExpiredKeyCannotBeTaken", func(t *testing.T) {
		if got, err := s.Take(t.Context(), "token"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Take of an expired token = %q, %v; want ErrNotFound", got, err)
		}
	})
	t.Run("UpdateSeesExpiredKeyAsMissing", func(t *testing.T) {
		mustUpdate(t, s, "stale", 0, func(cur []byte, found bool) ([]byte, error) {
			if found {
				t.Errorf("Update fn got found=true, current %q for an expired key", cur)
			}
			return []byte("new"), nil
		})
		expectValue(t, s, "stale", []byte("new"))
	})
	t.Run("UpdateKeepsExistingExpiry", func(t *testing.T) {
		expectNotFound(t, s, "updated")
	})
	t.Run("UpdateCreatedKeyGetsTTL", func(t *testing.T) {
		expectNotFound(t, s, "created")
	})
	t.Run("ExpiredMessageLeavesOutbox", func(t *testing.T) {
		// "retried" checks that rescheduling does not extend a message's life.
		expectOutboxLen(t, s, 1)
		got := ids(mustClaim(t, s, time.Now(), 10, time.Minute))
		if want := []string{"forever"}; !slices.Equal(got, want) {
			t.Errorf("Claim after expiry returned %v; want %v", got, want)
		}
	})
}

func mustPut(t *testing.T, s store.Store, key string, value []byte, ttl time.Duration) {
	t.Helper()
	if err := s.Put(t.Context(), key, value, ttl); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func mustUpdate(t *testing.T, s store.Store, key string, ttl time.Duration, fn func([]byte, bool) ([]byte, error)) {
	t.Helper()
	if err := s.Update(t.Context(), key, ttl, fn); err != nil {
		t.Fatalf("Update(%q): %v", key, err)
	}
}

func mustDelete(t *testing.T, s store.Store, key string) {
	t.Helper()
	if err := s.Delete(t.Context(), key); err != nil {
		t.Fatalf("Delete(%q): %v", key, err)
	}
}

func mustEnqueue(t *testing.T, s store.Store, id string, payload []byte, ttl time.Duration) {
	t.Helper()
	if err := s.Enqueue(t.Context(), id, payload, time.Time{}, ttl, store.PriorityHigh); err != nil {
		t.Fatalf("Enqueue(%q): %v", id, err)
	}
}

func mustEnqueueLow(t *testing.T, s store.Store, id string, due time.Time) {
	t.Helper()
	if err := s.Enqueue(t.Context(), id, []byte(id), due, 0, store.PriorityLow); err != nil {
		t.Fatalf("Enqueue(%q, PriorityLow): %v", id, err)
	}
}

func mustClaim(t *testing.T, s store.Store, now time.Time, max int, lease time.Duration) []store.OutboxItem {
	t.Helper()
	items, err := s.Claim(t.Context(), now, max, lease)
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	return items
}

func mustRetry(t *testing.T, s store.Store, id string, at time.Time) {
	t.Helper()
	if err := s.Retry(t.Context(), id, at); err != nil {
		t.Fatalf("Retry(%q): %v", id, err)
	}
}

func expectValue(t *testing.T, s store.Store, key string, want []byte) {
	t.Helper()
	got, err := s.Get(t.Context(), key)
	if err != nil {
		t.Errorf("Get(%q): %v; want %q", key, err, want)
	} else if !bytes.Equal(got, want) {
		t.Errorf("Get(%q) = %q; want %q", key, got, want)
	}
}

func expectNotFound(t *testing.T, s store.Store, key string) {
	t.Helper()
	if got, err := s.Get(t.Context(), key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(%q) = %q, %v; want ErrNotFound", key, got, err)
	}
}

func expectOutboxLen(t *testing.T, s store.Store, want int) {
	t.Helper()
	if got, err := s.OutboxLen(t.Context()); err != nil || got != want {
		t.Errorf("OutboxLen = %d, %v; want %d", got, err, want)
	}
}

func ids(items []store.OutboxItem) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.ID
	}
	return out
}

// Bench measures the operations a login performs, so that backends can be
// compared side by side. open is called once per sub-benchmark.
func Bench(b *testing.B, open func(b *testing.B) store.Store) {
	ctx := context.Background()
	value := bytes.Repeat([]byte("v"), 128)

	b.Run("Put", func(b *testing.B) {
		s := open(b)
		i := 0
		for b.Loop() {
			if err := s.Put(ctx, "login/"+strconv.Itoa(i), value, 15*time.Minute); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	// Login starts write concurrently, and a durable backend should commit
	// concurrent writers together (Badger groups them under one fsync)
	// rather than queue them behind one another: compare ns/op with Put's.
	b.Run("PutParallel16", func(b *testing.B) {
		s := open(b)
		var n atomic.Int64
		b.SetParallelism(8) // 8 per GOMAXPROCS: 16 writers on 2 cores
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				key := "login/" + strconv.FormatInt(n.Add(1), 10)
				if err := s.Put(ctx, key, value, 15*time.Minute); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("Get", func(b *testing.B) {
		s := open(b)
		const keys = 1000
		for i := range keys {
			if err := s.Put(ctx, "login/"+strconv.Itoa(i), value, 15*time.Minute); err != nil {
				b.Fatal(err)
			}
		}
		i := 0
		for b.Loop() {
			if _, err := s.Get(ctx, "login/"+strconv.Itoa(i%keys)); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("TakeToken", func(b *testing.B) {
		s := open(b)
		i := 0
		for b.Loop() {
			key := "token/" + strconv.Itoa(i)
			if err := s.Put(ctx, key, value, 15*time.Minute); err != nil {
				b.Fatal(err)
			}
			if _, err := s.Take(ctx, key); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("Update", func(b *testing.B) {
		s := open(b)
		incr := func(cur []byte, found bool) ([]byte, error) {
			n, _ := strconv.Atoi(string(cur))
			return strconv.AppendInt(cur[:0], int64(n+1), 10), nil
		}
		for b.Loop() {
			if err := s.Update(ctx, "counter", 0, incr); err != nil {
				b.Fatal(err)
			}
		}
	})
}
