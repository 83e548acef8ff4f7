package store_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/mailauth/caddy-mailauth/store"
	"github.com/mailauth/caddy-mailauth/store/storetest"
)

func openBadger(tb testing.TB, opts store.BadgerOptions) *store.Badger {
	tb.Helper()
	s, err := store.OpenBadger(opts, zaptest.NewLogger(tb))
	if err != nil {
		tb.Fatalf("OpenBadger: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestBadgerOnDiskConforms(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openBadger(t, store.BadgerOptions{Dir: t.TempDir()})
	})
}

func TestBadgerInMemoryConforms(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openBadger(t, store.BadgerOptions{InMemory: true})
	})
}

func BenchmarkBadgerOnDisk(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store {
		return openBadger(b, store.BadgerOptions{Dir: b.TempDir()})
	})
}

func BenchmarkBadgerInMemory(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store {
		return openBadger(b, store.BadgerOptions{InMemory: true})
	})
}

func TestBadgerDataSurvivesReopen(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s, err := store.OpenBadger(store.BadgerOptions{Dir: dir}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("OpenBadger: %v", err)
	}
	if err := s.Put(ctx, "login/a", []byte("pending"), time.Hour); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if err := s.Put(ctx, "token/used", []byte("t"), time.Hour); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if _, err := s.Take(ctx, "token/used"); err != nil {
		t.Fatalf("Take: %v", err)
	}
	if err := s.Enqueue(ctx, "m1", []byte("mail"), time.Time{}, time.Hour, store.PriorityHigh); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v; want the first result, nil", err)
	}

	s = openBadger(t, store.BadgerOptions{Dir: dir})
	if got, err := s.Get(ctx, "login/a"); err != nil || string(got) != "pending" {
		t.Errorf("Get after reopen = %q, %v; want %q", got, err, "pending")
	}
	if _, err := s.Take(ctx, "token/used"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Take after reopen = %v; want ErrNotFound: a used token came back", err)
	}
	items, err := s.Claim(ctx, time.Now(), 10, time.Minute)
	if err != nil || len(items) != 1 || items[0].ID != "m1" || string(items[0].Payload) != "mail" {
		t.Errorf("Claim after reopen = %+v, %v; want message m1", items, err)
	}
}

func TestBadgerRefusesSecondOpenOfSameDir(t *testing.T) {
	dir := t.TempDir()
	openBadger(t, store.BadgerOptions{Dir: dir})
	s, err := store.OpenBadger(store.BadgerOptions{Dir: dir}, zaptest.NewLogger(t))
	if err == nil {
		s.Close()
		t.Fatal("second OpenBadger of an open dir succeeded; want a lock error")
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "store: badger: ") || !strings.Contains(msg, "lock") || !strings.Contains(msg, dir) {
		t.Errorf("second OpenBadger error %q; want it prefixed, naming the dir and the lock", msg)
	}
}

func TestOpenBadgerRejectsAmbiguousOptions(t *testing.T) {
	for _, opts := range []store.BadgerOptions{{}, {Dir: t.TempDir(), InMemory: true}} {
		if s, err := store.OpenBadger(opts, nil); err == nil {
			s.Close()
			t.Errorf("OpenBadger(%+v) succeeded; want an error", opts)
		}
	}
}
