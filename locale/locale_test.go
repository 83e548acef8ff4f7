package locale

import (
	"html/template"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var placeholder = regexp.MustCompile(`\{[0-9]+\}`)

func placeholders(m string) []string {
	p := placeholder.FindAllString(m, -1)
	slices.Sort(p)
	return slices.Compact(p)
}

func TestEveryCatalogueHasEveryKeyWithTheSamePlaceholders(t *testing.T) {
	if got := Languages(); !slices.Equal(got, []string{"en", "de", "tr"}) {
		t.Fatalf("shipped languages = %v, want en, de, tr (English first)", got)
	}
	for _, tag := range Languages() {
		c := Get(tag)
		for _, k := range English.Keys() {
			m, ok := c.Raw(k)
			if !ok {
				t.Errorf("%s lacks %q", tag, k)
				continue
			}
			en, _ := English.Raw(k)
			if m == "" {
				t.Errorf("%s: %q is empty", tag, k)
			}
			if !slices.Equal(placeholders(m), placeholders(en)) {
				t.Errorf("%s: %q has placeholders %v, English %v", tag, k, placeholders(m), placeholders(en))
			}
		}
		for _, k := range c.Keys() {
			if _, ok := English.Raw(k); !ok {
				t.Errorf("%s has %q, which English lacks (a key nobody uses, or English forgot it)", tag, k)
			}
		}
	}
}

// keyUse finds message keys in templates ({{t "key"}}, tt, tp, ta) and
// in the Go code that names pages' titles and messages.
var keyUse = []*regexp.Regexp{
	regexp.MustCompile(`\b(?:t|tt|tp|ta) "([a-z_.0-9]+)"`),
	regexp.MustCompile(`(?:Title|Message|Action|Error|Notice): +"([a-z_]+\.[a-z_.]+)"`),
	regexp.MustCompile(`d\.(?:Title|Message|Action|Error|Notice)(?:, [a-zA-Z.]+)* = "([a-z_]+\.[a-z_.]+)"`),
	regexp.MustCompile(`h\.unavailable\(w, r, "([a-z_.]+)", "([a-z_.]+)"\)`),
	regexp.MustCompile(`renderStepUp\(.*"([a-z_]+\.[a-z_.]+)"\)`),
}

func TestEveryKeyThePagesAndMailsUseIsInTheCatalogue(t *testing.T) {
	var files []string
	for _, g := range []string{"../caddymodule/pages/*.html", "../approval/mailtemplate/templates/*", "../caddymodule/*.go"} {
		m, _ := filepath.Glob(g)
		files = append(files, m...)
	}
	if len(files) < 20 {
		t.Fatalf("found only %d template and source files; run the test from locale/", len(files))
	}
	used := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, re := range keyUse {
			for _, m := range re.FindAllStringSubmatch(string(b), -1) {
				for _, k := range m[1:] {
					used++
					_, ok := English.Raw(k)
					if _, plural := English.Raw(k + ".other"); !ok && !plural {
						t.Errorf("%s uses %q, which the English catalogue lacks", f, k)
					}
				}
			}
		}
	}
	if used < 200 {
		t.Errorf("found only %d key uses; the patterns no longer match how templates name keys", used)
	}
}

func TestAMissingKeyFallsBackToEnglish(t *testing.T) {
	de := &Catalog{Tag: "xx", msgs: map[string]string{}}
	if got := de.Text("login.heading"); got != "Sign in" {
		t.Errorf("a catalogue without login.heading gives %q, want the English %q", got, "Sign in")
	}
	if got := de.Text("no.such.key"); got != "no.such.key" {
		t.Errorf("a key no catalogue has shows as %q, want the key itself", got)
	}
}

func TestDurationsAreWordedPerLanguage(t *testing.T) {
	for _, tc := range []struct {
		tag  string
		d    time.Duration
		want string
	}{
		{"en", 15 * time.Minute, "15 minutes"},
		{"en", time.Hour + 30*time.Minute, "1 hour 30 minutes"},
		{"en", 1 * time.Second, "1 second"},
		{"de", 15 * time.Minute, "15 Minuten"},
		{"de", time.Hour, "1 Stunde"},
		{"de", 2*time.Hour + time.Minute, "2 Stunden 1 Minute"},
		{"tr", 15 * time.Minute, "15 dakika"},
		{"tr", 8 * time.Hour, "8 saat"},
		{"tr", 45 * time.Second, "45 saniye"},
	} {
		if got := Get(tc.tag).Duration(tc.d); got != tc.want {
			t.Errorf("%s: Duration(%s) = %q, want %q", tc.tag, tc.d, got, tc.want)
		}
	}
}

func TestDatesAreWordedPerLanguage(t *testing.T) {
	at := time.Date(2025, 1, 6, 10, 42, 0, 0, time.UTC) // a Monday
	for tag, want := range map[string]string{
		"en": "Mon, 06 Jan 2025 10:42 UTC",
		"de": "Mo., 06. Jan. 2025, 10:42 UTC",
		"tr": "06 Oca 2025 Pzt, 10:42 UTC",
	} {
		if got := Get(tag).Date(at); got != want {
			t.Errorf("%s: Date = %q, want %q", tag, got, want)
		}
	}
}

func TestAcceptLanguagePicksAShippedLanguageOrTheFallback(t *testing.T) {
	for _, tc := range []struct{ header, fallback, want string }{
		{"de-DE,de;q=0.9,en;q=0.8", "en", "de"},
		{"tr", "en", "tr"},
		{"fr-FR,fr;q=0.9", "de", "de"},
		{"fr-FR,tr;q=0.5", "en", "tr"},
		{"", "tr", "tr"},
		{"en-GB", "de", "en"},
		{"garbage;;;", "de", "de"},
	} {
		if got := Match(tc.header, tc.fallback); got != tc.want {
			t.Errorf("Match(%q, %q) = %q, want %q", tc.header, tc.fallback, got, tc.want)
		}
	}
	for in, want := range map[string]string{"de_AT": "de", "TR-tr": "tr", " en ": "en", "fr": "", "": ""} {
		if got := Normalize(in); got != want {
			t.Errorf("Normalize(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHTMLEscapesTheMessageAndPlainArgumentsButNotBuiltMarkup(t *testing.T) {
	c := &Catalog{Tag: "xx", msgs: map[string]string{"k": "a < b: {1} and {2}"}}
	got := c.HTML("k", "<script>", template.HTML("<strong>x</strong>"))
	want := template.HTML("a &lt; b: &lt;script&gt; and <strong>x</strong>")
	if got != want {
		t.Errorf("HTML = %q, want %q", got, want)
	}
}
