//go:build !race

// The race detector makes sync.Pool drop items at random, so the codec's
// pooled HMAC state is rebuilt now and then and allocation counts are
// meaningless under -race; this file is built only without it.

package approval

import "testing"

func TestSessionDecodeAllocatesAtMostOnce(t *testing.T) {
	c := mustCodec(t, testKey(1), testKey(2))
	v := mustEncode(t, c, testSession())
	var s Session
	allocs := testing.AllocsPerRun(1000, func() {
		if err := c.decode(v, sessionNow, &s); err != nil {
			t.Fatalf("decode of a valid cookie: %v", err)
		}
	})
	if allocs > 1 {
		t.Errorf("decoding a valid cookie in full allocates %v times per call, want at most 1 (the string that holds the fields)", allocs)
	}
}

func TestSessionDecodeOfACookieSeenBeforeDoesNotAllocate(t *testing.T) {
	c := mustCodec(t, testKey(1), testKey(2))
	v := mustEncode(t, c, steppedUpSession())
	var s Session
	if err := c.Decode(v, sessionNow, &s); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if err := c.Decode(v, sessionNow, &s); err != nil {
			t.Fatalf("Decode of a valid cookie: %v", err)
		}
	})
	if allocs > 0 {
		t.Errorf("Decode of a cookie that verified before allocates %v times per call, want 0 (it comes from the cache)", allocs)
	}
}

func TestSessionDecodeOfInvalidCookieDoesNotAllocate(t *testing.T) {
	c := mustCodec(t, testKey(1))
	v := mustEncode(t, c, testSession())
	tampered := v[:len(v)-2] + flip(v[len(v)-2]) + v[len(v)-1:]
	var s Session
	allocs := testing.AllocsPerRun(1000, func() {
		if err := c.Decode(tampered, sessionNow, &s); err == nil {
			t.Fatal("Decode accepted a tampered cookie")
		}
	})
	if allocs > 0 {
		t.Errorf("Decode of a forged cookie allocates %v times per call, want 0: forgeries are the cheap path", allocs)
	}
}
