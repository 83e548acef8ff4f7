package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// What every page the browser tests reach is checked for: 0 axe-core
// violations of WCAG 2.2 AA in light and dark colour schemes, no
// horizontal overflow at 360 px (a small phone) and 1280 px (a laptop),
// and a screenshot of each in .cache/screenshots.

// axePath is where test/setup.sh installs axe-core from npm.
const axePath = ".cache/axe-core/node_modules/axe-core/axe.min.js"

var axeSource = sync.OnceValues(func() (string, error) {
	b, err := os.ReadFile(axePath)
	if err != nil {
		return "", fmt.Errorf("axe-core is not installed (%v): run test/setup.sh, which make test runs", err)
	}
	return string(b), nil
})

// wcag22AA are the axe-core tags of WCAG 2.0, 2.1 and 2.2 at levels A and
// AA.
var wcag22AA = []string{"wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"}

type axeNode struct {
	Target  []any  `json:"target"`
	Summary string `json:"failureSummary"`
}

type axeViolation struct {
	ID     string    `json:"id"`
	Impact string    `json:"impact"`
	Help   string    `json:"help"`
	Nodes  []axeNode `json:"nodes"`
}

type axeResult struct {
	Violations []axeViolation `json:"violations"`
	Passes     int            `json:"passes"`
	Incomplete int            `json:"incomplete"`
}

// axeResults collects each page's result for the summary the tests log
// and write to .cache/screenshots/axe-results.txt.
var axeResults struct {
	sync.Mutex
	lines []string
}

// runAxe injects axe-core into the tab's page and runs it. The page's CSP
// would refuse an injected <script>; Runtime.evaluate, which chromedp
// uses, is not subject to it.
func runAxe(t *testing.T, tab context.Context) axeResult {
	t.Helper()
	src, err := axeSource()
	if err != nil {
		t.Fatal(err)
	}
	tags, _ := json.Marshal(wcag22AA)
	var res axeResult
	if err := withTimeout(tab, 20*time.Second, func(ctx context.Context) error {
		loaded, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`typeof window.axe === "object"`))
		if err != nil {
			return err
		}
		if !loaded {
			if _, err := chromedp.Run(ctx, chromedp.Evaluate[*runtimeObject](src)); err != nil {
				return fmt.Errorf("injecting axe-core: %w", err)
			}
		}
		res, err = chromedp.Run(ctx, chromedp.Evaluate[axeResult](`axe.run(document, {runOnly: {type: "tag", values: `+string(tags)+`}, resultTypes: ["violations"]}).then(r => ({violations: r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => ({target: n.target, failureSummary: n.failureSummary}))})), passes: r.passes.length, incomplete: r.incomplete.length}))`, chromedp.EvalAwaitPromise))
		return err
	}); err != nil {
		t.Fatalf("running axe-core: %v", err)
	}
	return res
}

// runtimeObject is the result type for scripts whose value is not needed.
type runtimeObject = json.RawMessage

func describeViolations(vs []axeViolation) string {
	var b strings.Builder
	for _, v := range vs {
		fmt.Fprintf(&b, "  %s (%s): %s\n", v.ID, v.Impact, v.Help)
		for _, n := range v.Nodes {
			fmt.Fprintf(&b, "    at %v: %s\n", n.Target, strings.ReplaceAll(n.Summary, "\n", " "))
		}
	}
	return b.String()
}

// setViewport makes the tab a window of this width (device pixels = CSS
// pixels), as a phone or laptop of that width.
func setViewport(t *testing.T, tab context.Context, width, height int64) {
	t.Helper()
	if err := withTimeout(tab, 5*time.Second, func(ctx context.Context) error {
		_, err := chromedp.Call(ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{Width: width, Height: height, DeviceScaleFactor: 1, Mobile: width < 600})
		return err
	}); err != nil {
		t.Fatalf("setting the viewport to %dx%d: %v", width, height, err)
	}
}

// setMedia emulates the given prefers-* media features ("" clears them).
func setMedia(t *testing.T, tab context.Context, features map[string]string) {
	t.Helper()
	p := emulation.SetEmulatedMediaParams{}
	for _, k := range slices.Sorted(mapsKeys(features)) {
		p.Features = append(p.Features, &emulation.MediaFeature{Name: k, Value: features[k]})
	}
	if err := withTimeout(tab, 5*time.Second, func(ctx context.Context) error {
		_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, p)
		return err
	}); err != nil {
		t.Fatalf("emulating media %v: %v", features, err)
	}
}

func mapsKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// overflow reports what sticks out of the viewport horizontally, or "".
func overflow(t *testing.T, tab context.Context) string {
	t.Helper()
	var out string
	if err := withTimeout(tab, 5*time.Second, func(ctx context.Context) error {
		var err error
		out, err = chromedp.Run(ctx, chromedp.Evaluate[string](`(() => {
			const w = document.documentElement.clientWidth;
			if (document.documentElement.scrollWidth <= w) return "";
			const wide = [...document.querySelectorAll("body *")].filter(e => e.getBoundingClientRect().right > w + 0.5)
				.map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className && typeof e.className === "string" ? "." + e.className.split(" ").join(".") : "") + " (right " + Math.round(e.getBoundingClientRect().right) + ")");
			return "page is " + document.documentElement.scrollWidth + " px wide in a " + w + " px window: " + wide.slice(0, 5).join(", ");
		})()`))
		return err
	}); err != nil {
		t.Fatalf("measuring overflow: %v", err)
	}
	return out
}

// saveScreenshot writes a full-page PNG of the tab to .cache/screenshots.
func saveScreenshot(t *testing.T, tab context.Context, name string) string {
	t.Helper()
	var buf []byte
	if err := withTimeout(tab, 10*time.Second, func(ctx context.Context) error {
		var err error
		buf, err = chromedp.Run(ctx, chromedp.FullScreenshot(100))
		return err
	}); err != nil || len(buf) == 0 {
		t.Fatalf("screenshot of %s: %v", name, err)
	}
	dir := filepath.Join(".cache", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkPage checks the page the tab shows, named name: at 360 and 1280
// px wide it must not overflow and gets a screenshot; in the light and
// the dark colour scheme it must have no axe-core violation. The tab is
// left at 360 px, light.
func checkPage(t *testing.T, tab context.Context, name string) {
	t.Helper()
	var problems []string
	for _, width := range []int64{1280, 360} {
		setViewport(t, tab, width, 800)
		if o := overflow(t, tab); o != "" {
			problems = append(problems, fmt.Sprintf("at %d px the %s %s", width, name, o))
		}
		saveScreenshot(t, tab, fmt.Sprintf("%s-%d", name, width))
	}
	var summary []string
	for _, scheme := range []string{"dark", "light"} {
		setMedia(t, tab, map[string]string{"prefers-color-scheme": scheme})
		res := runAxe(t, tab)
		summary = append(summary, fmt.Sprintf("%s: %d violations, %d rules passed", scheme, len(res.Violations), res.Passes))
		if len(res.Violations) > 0 {
			problems = append(problems, fmt.Sprintf("axe-core found %d WCAG 2.2 AA violations on the %s page (%s):\n%s", len(res.Violations), name, scheme, describeViolations(res.Violations)))
		}
	}
	saveScreenshot(t, tab, name+"-360-light")
	line := fmt.Sprintf("%-24s %s", name, strings.Join(summary, "; "))
	t.Log("axe " + line)
	axeResults.Lock()
	axeResults.lines = append(axeResults.lines, line)
	writeAxeSummary(axeResults.lines)
	axeResults.Unlock()
	for _, p := range problems {
		t.Error(p)
	}
}

func writeAxeSummary(lines []string) {
	dir := filepath.Join(".cache", "screenshots")
	_ = os.MkdirAll(dir, 0o755)
	_ = os.WriteFile(filepath.Join(dir, "axe-results.txt"), []byte("axe-core "+axeVersion()+", WCAG 2.2 AA ("+strings.Join(wcag22AA, ", ")+")\n"+strings.Join(lines, "\n")+"\n"), 0o644)
}

func axeVersion() string {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(axePath), "package.json"))
	if err != nil {
		return "?"
	}
	var p struct{ Version string }
	_ = json.Unmarshal(b, &p)
	return p.Version
}

// keepScreenshot copies a screenshot the tests made into docs/, for the
// README, when MAILAUTH_UPDATE_DOCS is set: the checked-in pictures are
// the tests' own, and a run regenerates them.
func keepScreenshot(t *testing.T, name, as string) {
	t.Helper()
	if os.Getenv("MAILAUTH_UPDATE_DOCS") == "" {
		return
	}
	b, err := os.ReadFile(filepath.Join(".cache", "screenshots", name+".png"))
	if err != nil {
		t.Fatalf("keeping screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join("..", "docs", as), b, 0o644); err != nil {
		t.Fatalf("writing docs/%s: %v", as, err)
	}
	t.Logf("updated docs/%s", as)
}
