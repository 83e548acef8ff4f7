package approval

import (
	"bytes"
	"crypto/rand"
	"errors"
	"regexp"
	"strings"
	"testing"
	"testing/iotest"
)

var secretShape = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

func TestNewSecretIs43Base64URLCharacters(t *testing.T) {
	for range 100 {
		s, err := newSecret(rand.Reader, tokenBytes)
		if err != nil {
			t.Fatalf("newSecret: %v", err)
		}
		if !secretShape.MatchString(s) {
			t.Fatalf("newSecret returned %q, want 43 unpadded base64url characters", s)
		}
		if !validSecret(s) {
			t.Fatalf("validSecret refuses %q, which newSecret just made", s)
		}
	}
}

func TestNewSecretNeverRepeats(t *testing.T) {
	seen := make(map[string]bool)
	for range 10000 {
		s, err := newSecret(rand.Reader, tokenBytes)
		if err != nil {
			t.Fatalf("newSecret: %v", err)
		}
		if seen[s] {
			t.Fatalf("newSecret returned %q twice", s)
		}
		seen[s] = true
	}
}

func TestNewSecretFailsWhenRandomnessFails(t *testing.T) {
	boom := errors.New("entropy pool on fire")
	if s, err := newSecret(iotest.ErrReader(boom), tokenBytes); !errors.Is(err, boom) || s != "" {
		t.Errorf("newSecret on a failing reader = %q, %v; want no secret and the reader's error", s, err)
	}
	if s, err := newSecret(bytes.NewReader(make([]byte, tokenBytes-1)), tokenBytes); err == nil {
		t.Errorf("newSecret on a reader one byte short returned %q and no error; a short read must fail", s)
	}
}

func TestHashSecretIsNotTheSecret(t *testing.T) {
	s, err := newSecret(rand.Reader, tokenBytes)
	if err != nil {
		t.Fatal(err)
	}
	h := hashSecret(s)
	if h == s || strings.Contains(h, s) {
		t.Errorf("hashSecret(%q) = %q still contains the secret", s, h)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(h) {
		t.Errorf("hashSecret(%q) = %q, want 64 lowercase hex digits (SHA-256)", s, h)
	}
	if hashSecret(s) != h {
		t.Errorf("hashSecret is not deterministic: two calls on %q differ", s)
	}
	other, _ := newSecret(rand.Reader, tokenBytes)
	if hashSecret(other) == h {
		t.Errorf("two different secrets hash to the same %q", h)
	}
}

func TestHashSecretIsSHA256Hex(t *testing.T) {
	// SHA-256("abc"), from FIPS 180-2.
	const want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	if got := hashSecret("abc"); got != want {
		t.Errorf("hashSecret(%q) = %s, want %s", "abc", got, want)
	}
}

func TestSecretMatchesOnlyItsOwnHash(t *testing.T) {
	s, _ := newSecret(rand.Reader, tokenBytes)
	other, _ := newSecret(rand.Reader, tokenBytes)
	h := hashSecret(s)
	if !secretMatches(s, h) {
		t.Errorf("secretMatches(s, hashSecret(s)) = false, want true")
	}
	if secretMatches(other, h) {
		t.Errorf("a different secret matches the hash")
	}
	if secretMatches(h, h) {
		t.Errorf("the hash itself is accepted as the secret")
	}
	if secretMatches(s, h[:len(h)-1]) {
		t.Errorf("a truncated stored hash matches")
	}
	if secretMatches(s, "") {
		t.Errorf("an empty stored hash matches")
	}
	if secretMatches(s, strings.ToUpper(h)) {
		t.Errorf("an upper-cased stored hash matches; hashes are compared exactly")
	}
}

func TestValidSecretRefusesWrongShapes(t *testing.T) {
	good, _ := newSecret(rand.Reader, tokenBytes)
	tests := []struct {
		name, s string
	}{
		{"empty", ""},
		{"one short", good[:42]},
		{"one long", good + "A"},
		{"padded", good + "="},
		{"standard base64 plus", "+" + good[1:]},
		{"standard base64 slash", good[:42] + "/"},
		{"space", " " + good[1:]},
		{"newline", good[:42] + "\n"},
		{"NUL", "\x00" + good[1:]},
		{"non-ASCII", "é" + good[2:]},
		{"dot", good[:20] + "." + good[21:]},
		{"hex hash", hashSecret(good)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if validSecret(tt.s) {
				t.Errorf("validSecret(%q) = true, want false", tt.s)
			}
		})
	}
	for _, s := range []string{good, strings.Repeat("A", 43), strings.Repeat("-", 43), strings.Repeat("_", 43), "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ"} {
		if !validSecret(s) {
			t.Errorf("validSecret(%q) = false, want true: 43 base64url characters", s)
		}
	}
}

var referenceShape = regexp.MustCompile(`^[` + referenceAlphabet + `]{3}-[` + referenceAlphabet + `]{3}$`)

func TestNewReferenceIsThreeDashThreeUnambiguousCharacters(t *testing.T) {
	for range 1000 {
		r, err := newReference(rand.Reader)
		if err != nil {
			t.Fatalf("newReference: %v", err)
		}
		if !referenceShape.MatchString(r) {
			t.Fatalf("newReference returned %q, want XXX-XXX over %s", r, referenceAlphabet)
		}
		if strings.ContainsAny(r, "0O1ILUV") {
			t.Fatalf("newReference returned %q, which holds a character people confuse", r)
		}
	}
}

func TestNewReferenceUsesTheWholeAlphabet(t *testing.T) {
	seen := make(map[rune]bool)
	for range 2000 {
		r, err := newReference(rand.Reader)
		if err != nil {
			t.Fatalf("newReference: %v", err)
		}
		for _, c := range r {
			seen[c] = true
		}
	}
	for _, c := range referenceAlphabet {
		if !seen[c] {
			t.Errorf("2000 references never used %q; the mapping from random bytes misses part of the alphabet", c)
		}
	}
}

func TestNewReferenceFailsWhenRandomnessFails(t *testing.T) {
	if r, err := newReference(iotest.ErrReader(errors.New("no entropy"))); err == nil || r != "" {
		t.Errorf("newReference on a failing reader = %q, %v; want an error", r, err)
	}
}

func TestNewReferenceIsDeterministicForItsInput(t *testing.T) {
	r, err := newReference(bytes.NewReader([]byte{0, 1, 2, 28, 29, 255}))
	if err != nil {
		t.Fatal(err)
	}
	// 0→A, 1→B, 2→C, 28→9, 29→A (wraps), 255%29=23→4.
	if r != "ABC-9A4" {
		t.Errorf("newReference(0,1,2,28,29,255) = %q, want %q", r, "ABC-9A4")
	}
}
