package slapd

import (
	"encoding/base64"
	"fmt"
	"strings"
)

// entry is one LDIF record: a DN and its attributes in file order.
type entry struct {
	dn    string
	attrs []attribute
}

type attribute struct {
	name   string
	values []string
}

// parseLDIF reads the subset of LDIF (RFC 2849) that fixtures need: content
// records separated by blank lines, # comments, folded lines (a leading
// space continues the previous line) and base64 values ("name:: ...").
func parseLDIF(text string) ([]entry, error) {
	var (
		entries []entry
		cur     *entry
		lines   []string
	)
	// Unfold first, so every logical line is whole.
	for _, raw := range strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n") {
		if strings.HasPrefix(raw, " ") && len(lines) > 0 && lines[len(lines)-1] != "" {
			lines[len(lines)-1] += raw[1:]
			continue
		}
		lines = append(lines, raw)
	}
	for n, line := range lines {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if strings.TrimSpace(line) == "" {
			if cur != nil {
				entries = append(entries, *cur)
				cur = nil
			}
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("ldif line %d: no colon in %q", n+1, line)
		}
		if strings.HasPrefix(value, ":") {
			b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value[1:]))
			if err != nil {
				return nil, fmt.Errorf("ldif line %d: %v", n+1, err)
			}
			value = string(b)
		} else {
			value = strings.TrimLeft(value, " ")
		}
		if cur == nil {
			if !strings.EqualFold(name, "dn") {
				return nil, fmt.Errorf("ldif line %d: a record starts with %q, not dn", n+1, name)
			}
			cur = &entry{dn: value}
			continue
		}
		if i := indexAttr(cur.attrs, name); i >= 0 {
			cur.attrs[i].values = append(cur.attrs[i].values, value)
		} else {
			cur.attrs = append(cur.attrs, attribute{name: name, values: []string{value}})
		}
	}
	if cur != nil {
		entries = append(entries, *cur)
	}
	return entries, nil
}

func indexAttr(attrs []attribute, name string) int {
	for i, a := range attrs {
		if strings.EqualFold(a.name, name) {
			return i
		}
	}
	return -1
}
