// Package locale holds the message catalogues that pages and mails are
// worded from, one embedded file per language, and the wording of
// durations and times in each. English is complete by definition: a key
// another catalogue lacks falls back to it, and a test checks that none
// lacks any.
package locale

import (
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/text/language"
)

//go:embed messages/*.json
var files embed.FS

// Default is the language of a deployment that names none.
const Default = "en"

// Catalog is the messages of one language.
type Catalog struct {
	// Tag is the language's BCP 47 base tag ("en", "tr", "de").
	Tag  string
	msgs map[string]string
}

var (
	catalogs = map[string]*Catalog{}
	// tags are the languages shipped, English first; matcher picks among
	// them in the same order.
	tags    []string
	matcher language.Matcher
	// English is the catalogue every other falls back to.
	English *Catalog
)

func init() {
	entries, err := fs.Glob(files, "messages/*.json")
	if err != nil {
		panic(err)
	}
	for _, e := range entries {
		raw, err := files.ReadFile(e)
		if err != nil {
			panic(err)
		}
		c := &Catalog{Tag: strings.TrimSuffix(path.Base(e), ".json")}
		if err := json.Unmarshal(raw, &c.msgs); err != nil {
			panic(fmt.Sprintf("locale: %s: %v", e, err))
		}
		catalogs[c.Tag] = c
		tags = append(tags, c.Tag)
	}
	English = catalogs[Default]
	if English == nil {
		panic("locale: no English catalogue")
	}
	slices.SortFunc(tags, func(a, b string) int {
		switch {
		case a == Default:
			return -1
		case b == Default:
			return 1
		}
		return strings.Compare(a, b)
	})
	supported := make([]language.Tag, len(tags))
	for i, t := range tags {
		supported[i] = language.Make(t)
	}
	matcher = language.NewMatcher(supported)
}

// Languages are the tags of the shipped catalogues, English first.
func Languages() []string { return slices.Clone(tags) }

// Get returns the catalogue of tag, which Normalize accepts, or English
// when no catalogue is shipped for it.
func Get(tag string) *Catalog {
	if c := catalogs[Normalize(tag)]; c != nil {
		return c
	}
	return English
}

// Normalize reduces a language as directories and configs spell it
// ("de", "de-DE", "de_AT", "TR") to the base tag of a shipped catalogue,
// or "" when none is shipped for it.
func Normalize(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if i := strings.IndexAny(s, "-_"); i >= 0 {
		s = s[:i]
	}
	if catalogs[s] == nil {
		return ""
	}
	return s
}

// Match picks the shipped language that an Accept-Language header asks
// for, or fallback when it asks for none of them.
func Match(acceptLanguage, fallback string) string {
	if acceptLanguage == "" {
		return fallback
	}
	prefs, _, err := language.ParseAcceptLanguage(acceptLanguage)
	if err != nil || len(prefs) == 0 {
		return fallback
	}
	_, i, conf := matcher.Match(prefs...)
	if conf == language.No {
		return fallback
	}
	return tags[i]
}

// Keys are the keys of the catalogue, sorted.
func (c *Catalog) Keys() []string {
	keys := make([]string, 0, len(c.msgs))
	for k := range c.msgs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Raw is the message under key as written in the catalogue, and whether
// this catalogue has it (without falling back).
func (c *Catalog) Raw(key string) (string, bool) {
	m, ok := c.msgs[key]
	return m, ok
}

func (c *Catalog) message(key string) string {
	if m, ok := c.msgs[key]; ok {
		return m
	}
	if m, ok := English.msgs[key]; ok {
		return m
	}
	// A key nobody wrote shows as itself, so a page is never blank; the
	// catalogue test keeps this from shipping.
	return key
}

// Text is the message under key with {1}, {2}, … replaced by args, as
// plain text.
func (c *Catalog) Text(key string, args ...any) string {
	return expand(c.message(key), args, func(s string) string { return s }, func(a any) string { return fmt.Sprint(a) })
}

// HTML is the message under key for an HTML page or mail: the message and
// every argument are escaped, except arguments that are template.HTML
// already (markup the caller built, such as <strong> around an escaped
// value), which go in as they are.
func (c *Catalog) HTML(key string, args ...any) template.HTML {
	return template.HTML(expand(c.message(key), args, template.HTMLEscapeString, func(a any) string {
		if h, ok := a.(template.HTML); ok {
			return string(h)
		}
		return template.HTMLEscapeString(fmt.Sprint(a))
	}))
}

// Plural is Text of key+".one" when n is 1, else of key+".other"; n is
// {1}, and args follow it.
func (c *Catalog) Plural(key string, n int, args ...any) string {
	form := ".other"
	if n == 1 {
		form = ".one"
	}
	return c.Text(key+form, append([]any{n}, args...)...)
}

// expand replaces {n} in msg by the n-th argument, escaping the text
// between placeholders with lit and each argument with arg.
func expand(msg string, args []any, lit func(string) string, arg func(any) string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(msg, '{')
		if i < 0 {
			b.WriteString(lit(msg))
			return b.String()
		}
		j := strings.IndexByte(msg[i:], '}')
		n, err := 0, error(nil)
		if j > 0 {
			n, err = strconv.Atoi(msg[i+1 : i+j])
		}
		if j < 0 || err != nil || n < 1 {
			b.WriteString(lit(msg[:i+1]))
			msg = msg[i+1:]
			continue
		}
		b.WriteString(lit(msg[:i]))
		if n <= len(args) {
			b.WriteString(arg(args[n-1]))
		}
		msg = msg[i+j+1:]
	}
}

// Duration words d in the largest units that fit, to the minute ("15
// minutes", "1 hour 30 minutes"); under a minute it counts seconds. It is
// the one wording of durations: pages, mails and commands all use it.
func (c *Catalog) Duration(d time.Duration) string {
	if d < time.Minute {
		return c.Plural("duration.second", int(d.Round(time.Second)/time.Second))
	}
	d = d.Round(time.Minute)
	h, m := int(d/time.Hour), int(d%time.Hour/time.Minute)
	switch {
	case h == 0:
		return c.Plural("duration.minute", m)
	case m == 0:
		return c.Plural("duration.hour", h)
	}
	return c.Text("duration.join", c.Plural("duration.hour", h), c.Plural("duration.minute", m))
}

// Date words t with its weekday, date and time, in t's own zone
// ("Mon, 02 Jan 2006 15:04 MST" in English).
func (c *Catalog) Date(t time.Time) string {
	wd := strings.Fields(c.message("time.weekdays"))
	mon := strings.Fields(c.message("time.months"))
	w, m := "", ""
	if len(wd) == 7 {
		w = wd[t.Weekday()]
	}
	if len(mon) == 12 {
		m = mon[t.Month()-1]
	}
	return c.Text("time.date", w, t.Format("02"), m, t.Format("2006"), Clock(t))
}

// Clock is the time of day of t in its own zone, "15:04 MST": 24-hour in
// every shipped language.
func Clock(t time.Time) string { return t.Format("15:04 MST") }
