package approval

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
)

// tokenBytes is the entropy of link tokens and pending-login secrets: 256
// bits, so guessing one is not a threat even without rate limits.
const tokenBytes = 32

// newSecret returns n random bytes from r encoded as base64url.
func newSecret(r io.Reader, n int) (string, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("approval: reading randomness: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// hashSecret is how secrets are stored and looked up: only the SHA-256 of a
// token or pending secret ever reaches the store, so a copy of the store
// cannot be replayed as links or cookies.
func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// secretMatches compares a presented secret with a stored hash in constant
// time, so the comparison leaks nothing about how much of it matched.
func secretMatches(secret, hash string) bool {
	h := hashSecret(secret)
	return len(h) == len(hash) && subtle.ConstantTimeCompare([]byte(h), []byte(hash)) == 1
}

// validSecret reports whether s has the shape of a secret made by newSecret
// with tokenBytes of entropy, so malformed input is refused before any
// store lookup.
func validSecret(s string) bool {
	if len(s) != base64.RawURLEncoding.EncodedLen(tokenBytes) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// referenceAlphabet leaves out letters and digits that people confuse when
// they read a code to support over the phone (0/O, 1/I/L, U/V).
const referenceAlphabet = "ABCDEFGHJKMNPQRSTWXYZ23456789"

// newReference returns a short code such as "K7F-3QX" that a user can quote
// to support and an operator can find in the audit log. It is not a secret.
func newReference(r io.Reader) (string, error) {
	var b [6]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("approval: reading randomness: %w", err)
	}
	out := make([]byte, 0, 7)
	for i, c := range b {
		if i == 3 {
			out = append(out, '-')
		}
		// The modulo bias over 256/29 is irrelevant for a non-secret label.
		out = append(out, referenceAlphabet[int(c)%len(referenceAlphabet)])
	}
	return string(out), nil
}

// Rand is the source of randomness used when none is configured.
var Rand io.Reader = rand.Reader
