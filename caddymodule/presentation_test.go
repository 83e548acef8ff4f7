package caddymodule

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailauth/caddy-mailauth/approval/mailtemplate"
)

// adaptedApp adapts the global options opts (with validOpts) and builds
// the app as a config load does, without opening a store.
func adaptedApp(t *testing.T, opts string) (*App, error) {
	t.Helper()
	out, err := adapt(t, globalBlock(validOpts+"\n"+opts))
	if err != nil {
		return nil, err
	}
	var cfg struct {
		Apps struct {
			Mailauth App `json:"mailauth"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	a := &cfg.Apps.Mailauth
	_, err = a.build()
	t.Cleanup(func() { _ = a.closeGuests() })
	return a, err
}

func TestBrandIsParsedAndShownOnEveryPage(t *testing.T) {
	dir := t.TempDir()
	logo := filepath.Join(dir, "logo.svg")
	if err := os.WriteFile(logo, []byte(`<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>`), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := adaptedApp(t, `		brand {
			name "Acme Access"
			logo `+logo+`
			color "#0b5fff"
			support it-help@acme.example
		}`)
	if err != nil {
		t.Fatalf("a valid brand block should load: %v", err)
	}
	h, _ := testHandler(t)
	h.app.pages, h.app.brand, h.app.logo, h.app.logoType, h.app.brandCSS = a.pages, a.brand, a.logo, a.logoType, a.brandCSS
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "/.mailauth/login", nil)
	if err := h.loginForm(w, r); err != nil {
		t.Fatal(err)
	}
	body := w.Body.String()
	for _, want := range []string{"Acme Access", `src="/.mailauth/static/brand-logo?v=`, `href="/.mailauth/static/brand.css?v=`, `href="mailto:it-help@acme.example"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the login page should show %q:\n%s", want, body)
		}
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "img-src 'self'") || strings.Contains(csp, "data:") {
		t.Errorf("the logo must not loosen the CSP: %s", csp)
	}
	w = httptest.NewRecorder()
	if err := h.serveStatic(w, brandLogoPath); err != nil || w.Header().Get("Content-Type") != "image/svg+xml" || !strings.Contains(w.Header().Get("Content-Security-Policy"), "sandbox") {
		t.Errorf("the logo should be served as image/svg+xml under a sandbox CSP: %v %v", err, w.Header())
	}
	w = httptest.NewRecorder()
	if err := h.serveStatic(w, brandCSSPath); err != nil || !strings.Contains(w.Body.String(), "--accent: #0b5fff") {
		t.Errorf("the brand stylesheet should set the accent colour: %v %s", err, w.Body.String())
	}
	if a.mailBrand.Color != "#0b5fff" || a.mailBrand.ColorText != "#ffffff" || a.mailBrand.Name != "Acme Access" {
		t.Errorf("mails should carry the brand's name on its colour with readable text: %+v", a.mailBrand)
	}
}

func TestBrandErrorsNameTheFieldAndTheFix(t *testing.T) {
	for _, tc := range []struct{ opts, want string }{
		{"brand {\n color blue\n}", `brand: color: "blue" is not a colour like #0b5fff`},
		{"brand {\n support help-desk\n}", `brand: support: "help-desk" must be a mail address or an https:// URL`},
		{"brand {\n logo /nonexistent/logo.svg\n}", "brand: logo: needs name as well"},
		{"brand {\n name Acme\n logo /nonexistent/logo.svg\n}", "brand: logo: open /nonexistent/logo.svg"},
		{"brand {\n name Acme\n logo /etc/hostname\n}", "is not an .svg, .png, .jpg, .gif or .webp file"},
		{"brand {\n colour \"#fff\"\n}", `brand: unknown option "colour"`},
		{"default_language fr", `default_language: "fr" has no message catalogue (have: en, de, tr)`},
	} {
		_, err := adaptedApp(t, tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one saying %q", tc.opts, err, tc.want)
		}
	}
}

func TestAColourTooLightToReadIsDarkenedForLinksButKeptForTheMailBand(t *testing.T) {
	a, err := adaptedApp(t, "brand {\n name Acme\n color \"#ffd400\"\n}")
	if err != nil {
		t.Fatal(err)
	}
	css := string(a.brandCSS)
	accent := strings.TrimSuffix(strings.Fields(css[strings.Index(css, "--accent:"):])[1], ";")
	c, err := parseHexColor(accent)
	if err != nil {
		t.Fatalf("no accent in %s", css)
	}
	if r := contrast(c, rgb{255, 255, 255}); r < 4.5 {
		t.Errorf("the light accent %s has contrast %.2f on white, want at least 4.5", accent, r)
	}
	if a.mailBrand.Color != "#ffd400" || a.mailBrand.ColorText != "#000000" {
		t.Errorf("the mail band keeps the brand colour with black text on yellow: %+v", a.mailBrand)
	}
}

func TestTemplatesDirectoryReplacesPagesAndMailsAndNamesTheFileThatFails(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("login.html", `{{define "content"}}<h1>Welcome to Acme</h1>{{end}}`)
	write("mail/subject.txt", `Acme: {{t "mail.user.subject" .App}}`)
	a, err := adaptedApp(t, "templates "+dir)
	if err != nil {
		t.Fatalf("a templates directory with valid overrides should load: %v", err)
	}
	h, _ := testHandler(t)
	h.app.pages = a.pages
	w := httptest.NewRecorder()
	if err := h.loginForm(w, httptest.NewRequest(http.MethodGet, "/.mailauth/login", nil)); err != nil || !strings.Contains(w.Body.String(), "Welcome to Acme") {
		t.Errorf("the overridden login page should render: %v\n%s", err, w.Body.String())
	}
	subject, _, _, err := a.profiles["daily"].Templates.Render(mailtemplate.SampleData())
	if err != nil || subject != "Acme: Sign in to apps.example.com" {
		t.Errorf("the overridden mail subject = %q, %v", subject, err)
	}

	write("wait.html", `{{define "content"}}{{if}}{{end}}`)
	_, err = adaptedApp(t, "templates "+dir)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "wait.html")) {
		t.Errorf("a page that does not parse should be refused naming it: %v", err)
	}
	os.Remove(filepath.Join(dir, "wait.html"))
	write("mail/body.html", `{{.NoSuchField}}`)
	_, err = adaptedApp(t, "templates "+dir)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "mail", "body.html")) {
		t.Errorf("a mail template that fails should be refused naming it: %v", err)
	}
	os.Remove(filepath.Join(dir, "mail", "body.html"))
	write("logn.html", `x`)
	_, err = adaptedApp(t, "templates "+dir)
	if err == nil || !strings.Contains(err.Error(), "logn.html: no page has this name") {
		t.Errorf("a misspelt override should be refused: %v", err)
	}
}

func TestPagesFollowAcceptLanguageThenTheDefault(t *testing.T) {
	h, _ := testHandler(t)
	for _, tc := range []struct{ header, def, want string }{
		{"de-DE,de;q=0.9", "", "Benutzername oder E-Mail"},
		{"tr", "", "Kullanıcı adı veya e-posta"},
		{"fr", "", "Username or email"},
		{"fr", "de", "Benutzername oder E-Mail"},
	} {
		h.app.language = tc.def
		r := httptest.NewRequest(http.MethodGet, "/.mailauth/login", nil)
		r.Header.Set("Accept-Language", tc.header)
		w := httptest.NewRecorder()
		if err := h.loginForm(w, r); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(w.Body.String(), tc.want) {
			t.Errorf("Accept-Language %q, default %q: the login page should say %q:\n%s", tc.header, tc.def, tc.want, w.Body.String())
		}
	}
}

// The brand is checked once, by BrandConfig.Validate: a Caddyfile gets
// the error at the line of the field, and a JSON config the same words.
func TestBrandChecksAreTheSameForCaddyfileAndJSON(t *testing.T) {
	_, err := adapt(t, globalBlock(validOpts+"\n\t\tbrand {\n\t\t\tname Acme\n\t\t\tcolor blue\n\t\t}"))
	wantParseError(t, err, `Caddyfile:21 - Error during parsing: brand: color: "blue" is not a colour like #0b5fff`)

	app := &App{Brand: &BrandConfig{Name: "Acme", Support: "help-desk"}}
	err = app.Brand.Validate()
	fe, ok := errors.AsType[*FieldError](err)
	if !ok || fe.Block != "brand" || fe.Field != "support" || err.Error() != `brand: support: "help-desk" must be a mail address or an https:// URL` {
		t.Fatalf("a JSON brand with a bad support address gave %v; want the Caddyfile's FieldError", err)
	}
}
