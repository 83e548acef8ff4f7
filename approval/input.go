package approval

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// NormalizeIdentity turns what a user typed into the one username or
// address that is looked up, or returns ErrBadInput. It applies NFKC, so
// look-alike forms (full-width letters, ligatures) become the plain ones
// the directory holds, trims space, and caps the length. It refuses control
// characters (CR/LF would split a mail header), lists (commas, semicolons,
// spaces inside) and anything that is not valid UTF-8: mail only ever goes
// to the address the directory holds, and a list is never a login.
func NormalizeIdentity(input string) (string, error) {
	if !utf8.ValidString(input) || len(input) > 4*maxInput {
		return "", ErrBadInput
	}
	s := strings.TrimSpace(norm.NFKC.String(input))
	if s == "" || len(s) > maxInput {
		return "", ErrBadInput
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.IsSpace(r) || r == ',' || r == ';' || r == '\uFEFF' || unicode.Is(unicode.Cf, r) {
			return "", ErrBadInput
		}
	}
	return s, nil
}
