package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mailauth/caddy-mailauth/approval/mailtemplate"
)

// BrandConfig is the operator's branding, shown on every page and mail.
type BrandConfig struct {
	// Name is the name shown at the top of every page and mail and in
	// page titles, such as "Acme Access". Required when Logo is set: it
	// is the logo's text. Default: no brand name.
	Name string `json:"name,omitempty"`
	// Logo is an image file (SVG, PNG, JPEG, GIF or WebP, at most 1 MiB)
	// shown beside Name on every page. It is read at load and served by
	// the module from its own static path, so the pages' CSP keeps
	// img-src 'self' and nothing is loaded from elsewhere. Mail carries
	// no logo (see mailtemplate.Brand). Default: none.
	Logo string `json:"logo,omitempty"`
	// Color is the brand colour as #rgb or #rrggbb: buttons, links and
	// focus rings on pages, and the band with Name atop every mail. Where
	// it would be too light or too dark to read on the page (WCAG AA,
	// 4.5:1), a darker or lighter shade of it is used. Default: the
	// built-in blue.
	Color string `json:"color,omitempty"`
	// Support is a mail address or an https:// URL that pages and mails
	// tell people to contact for help. Default: none.
	Support string `json:"support,omitempty"`
}

// Where the brand's assets are served, under the module's static path.
const (
	brandLogoPath = "brand-logo"
	brandCSSPath  = "brand.css"
	maxLogoBytes  = 1 << 20
)

var logoTypes = map[string]string{
	".svg": "image/svg+xml", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
	".gif": "image/gif", ".webp": "image/webp",
}

// Validate checks the brand's fields; the logo file is read at load.
func (b *BrandConfig) Validate() error {
	field := func(f, format string, args ...any) error { return fieldErr("brand", f, format, args...) }
	if strings.ContainsAny(b.Name, "\r\n") || len(b.Name) > 100 {
		return field("name", "%q must be one line of at most 100 characters", b.Name)
	}
	if b.Support != "" && !strings.HasPrefix(b.Support, "https://") && !validAddress(b.Support) {
		return field("support", "%q must be a mail address or an https:// URL", b.Support)
	}
	if b.Logo != "" {
		if b.Name == "" {
			return field("logo", "needs name as well: the name is the logo's text for people who cannot see it")
		}
		if _, ok := logoTypes[strings.ToLower(filepath.Ext(b.Logo))]; !ok {
			return field("logo", "%s is not an .svg, .png, .jpg, .gif or .webp file", b.Logo)
		}
	}
	if b.Color != "" {
		if _, err := parseHexColor(b.Color); err != nil {
			return field("color", "%q is not a colour like #0b5fff", b.Color)
		}
	}
	return nil
}

// buildBrand makes what pages and mails show of the brand, which
// validate has checked.
func (a *App) buildBrand() error {
	a.brand, a.mailBrand, a.logo, a.logoType, a.brandCSS = pageBrand{}, mailtemplate.Brand{}, nil, "", nil
	b := a.Brand
	if b == nil {
		return nil
	}
	field := func(f, format string, args ...any) error {
		return fmt.Errorf("mailauth: %w", fieldErr("brand", f, format, args...))
	}
	a.brand.Name, a.mailBrand.Name = b.Name, b.Name
	a.brand.Support, a.mailBrand.Support = b.Support, b.Support
	if b.Logo != "" {
		typ := logoTypes[strings.ToLower(filepath.Ext(b.Logo))]
		raw, err := os.ReadFile(b.Logo)
		if err != nil {
			return field("logo", "%v", err)
		}
		if len(raw) > maxLogoBytes {
			return field("logo", "%s is %d bytes; at most %d", b.Logo, len(raw), maxLogoBytes)
		}
		a.logo, a.logoType = raw, typ
		a.brand.Logo = prefix + "static/" + brandLogoPath + "?v=" + contentHash(raw)
	}
	a.mailBrand.Color, a.mailBrand.ColorText = "#1f5fd1", "#ffffff"
	if b.Color != "" {
		c, err := parseHexColor(b.Color)
		if err != nil {
			return field("color", "%q is not a colour like #0b5fff", b.Color)
		}
		light := readableOn(c, rgb{255, 255, 255}, rgb{0, 0, 0})
		dark := readableOn(c, rgb{0x1d, 0x23, 0x2c}, rgb{255, 255, 255})
		css := fmt.Sprintf(":root { --accent: %s; --accent-fg: %s; }\n@media (prefers-color-scheme: dark) { :root { --accent: %s; --accent-fg: %s; } }\n",
			light, textOn(light), dark, textOn(dark))
		a.brandCSS = []byte(css)
		a.brand.CSS = prefix + "static/" + brandCSSPath + "?v=" + contentHash(a.brandCSS)
		a.mailBrand.Color, a.mailBrand.ColorText = c.String(), textOn(c)
	}
	return nil
}

func contentHash(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:6])
}

type rgb struct{ r, g, b uint8 }

func (c rgb) String() string { return fmt.Sprintf("#%02x%02x%02x", c.r, c.g, c.b) }

func parseHexColor(s string) (rgb, error) {
	h, ok := strings.CutPrefix(s, "#")
	if !ok || (len(h) != 3 && len(h) != 6) {
		return rgb{}, fmt.Errorf("not a hex colour")
	}
	if len(h) == 3 {
		h = string([]byte{h[0], h[0], h[1], h[1], h[2], h[2]})
	}
	n, err := strconv.ParseUint(h, 16, 32)
	if err != nil {
		return rgb{}, fmt.Errorf("not a hex colour")
	}
	return rgb{uint8(n >> 16), uint8(n >> 8), uint8(n)}, nil
}

// luminance is WCAG's relative luminance.
func (c rgb) luminance() float64 {
	ch := func(v uint8) float64 {
		s := float64(v) / 255
		if s <= 0.04045 {
			return s / 12.92
		}
		return math.Pow((s+0.055)/1.055, 2.4)
	}
	return 0.2126*ch(c.r) + 0.7152*ch(c.g) + 0.0722*ch(c.b)
}

// contrast is WCAG's contrast ratio of a and b.
func contrast(a, b rgb) float64 {
	la, lb := a.luminance(), b.luminance()
	if la < lb {
		la, lb = lb, la
	}
	return (la + 0.05) / (lb + 0.05)
}

// readableOn is c, or c mixed toward toward (black on a light page, white
// on a dark one) just far enough to reach 4.5:1 against bg, so links and
// focus rings in the brand colour stay readable.
func readableOn(c, bg, toward rgb) rgb {
	mix := func(f float64) rgb {
		m := func(a, b uint8) uint8 { return uint8(math.Round(float64(a) + (float64(b)-float64(a))*f)) }
		return rgb{m(c.r, toward.r), m(c.g, toward.g), m(c.b, toward.b)}
	}
	for f := 0.0; f <= 1; f += 0.02 {
		if x := mix(f); contrast(x, bg) >= 4.5 {
			return x
		}
	}
	return toward
}

// textOn is black or white, whichever reads better on c.
func textOn(c rgb) string {
	if contrast(c, rgb{0, 0, 0}) >= contrast(c, rgb{255, 255, 255}) {
		return "#000000"
	}
	return "#ffffff"
}
