"""The built HTML book, driven in headless Chromium as a reader would use it (`make browser`).

For every page of `_build/html`: no JavaScript error; no request leaves the machine (MathJax is local);
MathJax rendered every formula (no raw `$$`, `\\begin`, `\\(` left, no TeX error boxes); every image
loaded; every internal link and cross-reference points to an existing file and anchor; no dead widget.
For every chapter: its Colab launch button targets the chapter's committed .ipynb on the configured
branch, its kernel-free player changes the figure when the next button or the slider is used, and
each of its (at least three) explorable figures (pclib.explore) changes when any of its controls is
moved, drawn by the book's own plotly.js, loaded once per page.
The search page finds "energy". A full-page screenshot of each page goes to `_build/screenshots/`.

The browser is Debian's Chromium (`/usr/bin/chromium`, or $BOOK_CHROMIUM), driven by Playwright's
Python client, which downloads no browser of its own (never run `playwright install`). Without a
Chromium the tests are skipped with the install command, except under CI=true where they fail.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPO = CONFIG["repository"]
CHROMIUM = os.environ.get("BOOK_CHROMIUM", "/usr/bin/chromium")
SKIP_DIRS = {"_static", "_sources", "_images", "mathjax"}
PAGES = sorted(str(p.relative_to(HTML)) for p in HTML.rglob("*.html")
               if not SKIP_DIRS & set(p.relative_to(HTML).parts)) if HTML.exists() else []
CHAPTERS = sorted(p.stem for p in (ROOT / "book" / "chapters").glob("*.md"))


def colab_url(chapter: str) -> str:
    """The launch URL that sphinx-book-theme derives from _config.yml for a chapter's notebook."""
    org_repo = REPO["url"].rstrip("/").removeprefix("https://github.com/")
    path = "/".join(p for p in (REPO.get("path_to_book", "").strip("/"), "book/chapters", chapter + ".ipynb") if p)
    return f"{CONFIG['launch_buttons']['colab_url'].rstrip('/')}/github/{org_repo}/blob/{REPO['branch']}/{path}"


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def server():
    if not (HTML / "index.html").exists():
        pytest.fail("no built book in _build/html: run `make book` first (`make browser` does)")
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def browser():
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        msg = (f"no Chromium at {CHROMIUM}: install Debian's (`apt-get install -y chromium`, which .ci/run does "
               "as root) or set BOOK_CHROMIUM to a Chromium/Chrome binary")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
            "--disable-background-networking", "--disable-component-update"])
        yield b
        b.close()


class Page:
    """One loaded page with what it logged: JavaScript errors and attempted requests off this machine."""

    def __init__(self, browser, url: str):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.external: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(f"console: {m.text}"))
        self.context.route(re.compile(r"^(?!http://127\.0\.0\.1[:/]|data:|blob:|about:).*"), self._block)
        self.page.goto(url, wait_until="load")
        self.page.wait_for_load_state("networkidle")
        # MathJax typesets asynchronously; wait for it on pages that load it
        self.page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")

    def _block(self, route):
        self.external.append(route.request.url)
        route.abort()

    def close(self):
        self.context.close()


@pytest.fixture
def open_page(browser, server):
    opened = []

    def _open(rel: str) -> Page:
        p = Page(browser, server + rel)
        opened.append(p)
        return p

    yield _open
    for p in opened:
        p.close()


# ------------------------------------------------------------------------------------------- link checks
class _Anchors(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k == "id" or (k == "name" and tag == "a"):
                self.ids.add(v)


@functools.lru_cache(maxsize=None)
def anchors(path: Path) -> frozenset[str]:
    parser = _Anchors()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.ids)


def broken_links(hrefs: list[str], origin: str) -> list[str]:
    bad = []
    for href in sorted(set(hrefs)):
        if not href.startswith(origin):
            continue  # external: the scheduled link check covers those
        parts = urlsplit(href)
        target = HTML / unquote(parts.path).lstrip("/")
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            bad.append(f"{href}: no file {target.relative_to(HTML)}")
        elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in anchors(target):
            bad.append(f"{href}: no anchor #{parts.fragment} in {target.relative_to(HTML)}")
    return bad


# ------------------------------------------------------------------------------------------------- tests
RAW_MATH_JS = """() => {
  const root = (document.querySelector('main') || document.body).cloneNode(true);
  root.querySelectorAll('pre, code, script, style, textarea, mjx-container, .highlight').forEach(e => e.remove());
  return root.textContent;
}"""

STATE_JS = """() => ({
  math: document.querySelectorAll('.math').length,
  unrendered: Array.from(document.querySelectorAll('.math')).filter(e => !e.querySelector('mjx-container')).length,
  texErrors: Array.from(document.querySelectorAll('mjx-merror')).map(e => e.getAttribute('data-mjx-error') || e.textContent),
  badImages: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => (i.currentSrc || i.src).slice(0, 120)),
  images: document.images.length,
  hrefs: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  colab: Array.from(document.querySelectorAll('a[href^="https://colab.research.google.com"]')).map(a => a.href),
  widgets: document.querySelectorAll('.jupyter-widgets, .widget-area').length,
})"""


@pytest.mark.parametrize("rel", PAGES)
def test_page(open_page, server, rel):
    p = open_page(rel)
    SHOTS.mkdir(parents=True, exist_ok=True)
    p.page.screenshot(path=str(SHOTS / (rel.replace("/", "__").removesuffix(".html") + ".png")), full_page=True)
    state = p.page.evaluate(STATE_JS)
    text = p.page.evaluate(RAW_MATH_JS)
    problems = []
    problems += p.errors
    problems += [f"requested off-machine: {u}" for u in p.external]
    for raw in ("$$", "\\begin", "\\(", "\\["):
        if raw in text:
            i = text.index(raw)
            problems.append(f"raw maths {raw!r} in the text: ...{text[max(0, i - 60):i + 60]!r}...")
    if state["unrendered"]:
        problems.append(f"{state['unrendered']} of {state['math']} formulas not typeset by MathJax")
    problems += [f"TeX error: {e}" for e in state["texErrors"]]
    problems += [f"image did not load: {s}" for s in state["badImages"]]
    problems += broken_links(state["hrefs"], server)
    if state["widgets"] or "Loading widget" in text or "interactive(children=" in text:
        problems.append("a dead ipywidgets output is rendered in the HTML")
    assert not problems, f"{rel}:\n" + "\n".join(problems)


def test_every_toc_page_was_built():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc.get("parts", []) for c in part["chapters"]]
    missing = [f for f in files if f + ".html" not in PAGES]
    assert not missing, f"pages in _toc.yml missing from _build/html: {missing}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_colab_link(open_page, chapter):
    """The launch button opens the chapter's committed notebook, on the configured branch."""
    rel = f"book/chapters/{chapter}.html"
    assert rel in PAGES, f"{rel} was not built"
    links = set(open_page(rel).page.evaluate(STATE_JS)["colab"])
    assert links == {colab_url(chapter)}, f"{rel}: Colab links {links}, expected {colab_url(chapter)}"
    assert (ROOT / "book" / "chapters" / f"{chapter}.ipynb").exists()


PLAYER_JS = """(k) => {
  const root = document.querySelectorAll('div.animation')[k];
  return {src: root.querySelector('img[id^="_anim_img"]').src,
          frames: Number(root.querySelector('input[type=range]').max) + 1};
}"""


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_player_works_without_a_kernel(open_page, chapter):
    """Every chapter has a kernel-free player whose next button and slider change the figure."""
    page = open_page(f"book/chapters/{chapter}.html").page
    players = page.locator("div.animation")
    assert players.count() >= 1, f"{chapter}: no kernel-free player (pclib.plotting.player) in the HTML"
    for k in range(players.count()):
        player = players.nth(k)
        first = page.evaluate(PLAYER_JS, k)
        assert first["frames"] >= 2, f"player {k} has {first['frames']} frame"
        player.locator('button[title="Next frame"]').click()
        after_next = page.evaluate(PLAYER_JS, k)["src"]
        assert after_next != first["src"], f"player {k}: the next button did not change the figure"
        slider = player.locator("input[type=range]")
        slider.evaluate("(s) => { s.value = s.max; s.dispatchEvent(new Event('input', {bubbles: true})); }")
        after_slider = page.evaluate(PLAYER_JS, k)["src"]
        assert after_slider not in (first["src"], after_next), f"player {k}: the slider did not change the figure"
        assert player.locator('img[id^="_anim_img"]').evaluate("(i) => i.complete && i.naturalWidth > 0")


def test_search_finds_energy(open_page):
    page = open_page("search.html?q=energy").page
    results = page.locator("#search-results ul.search li")
    results.first.wait_for(timeout=20_000)
    hrefs = results.locator("a").evaluate_all("(as) => as.map(a => a.getAttribute('href'))")
    assert any("book/chapters/" in (h or "") for h in hrefs), f"search for 'energy' found no chapter: {hrefs}"


EXPLORE_JS = """(k) => {
  const root = document.querySelectorAll('div.pclib-explore')[k];
  const plot = root.querySelector('.pclib-explore-plot');
  return {id: root.id, drawn: Array.isArray(plot.data) && plot.data.length > 0,
          data: plot.data ? JSON.stringify(plot.data.map(t => [t.x, t.y, t.z])) : null,
          controls: Array.from(root.querySelectorAll('[data-control]')).map(c => ({name: c.name, tag: c.tagName,
            value: c.value, n: c.tagName === 'SELECT' ? c.options.length : Number(c.max) + 1}))};
}"""

SET_CONTROL_JS = """([k, name, value]) => {
  const el = document.querySelectorAll('div.pclib-explore')[k].querySelector(`[data-control][name="${name}"]`);
  el.value = String(value);
  el.dispatchEvent(new Event('input', {bubbles: true}));
  el.dispatchEvent(new Event('change', {bubbles: true}));
}"""


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_explorable_figures_work_without_a_kernel(open_page, chapter):
    """At least three plotly figures per chapter, drawn from the book's own plotly.js (loaded once per page);
    moving each control changes the figure, with no JavaScript error and no request leaving the book."""
    p = open_page(f"book/chapters/{chapter}.html")
    page = p.page
    n = page.locator("div.pclib-explore").count()
    assert n >= 3, f"{chapter}: {n} explorable figures (pclib.explore), expected at least 3"
    page.wait_for_function("() => Array.from(document.querySelectorAll('div.pclib-explore .pclib-explore-plot'))"
                           ".every(p => Array.isArray(p.data) && p.data.length > 0)", timeout=30_000)
    loads = page.evaluate("() => Array.from(document.scripts).map(s => s.getAttribute('src') || '')"
                          ".filter(s => s.endsWith('plotly.min.js'))")
    assert loads == ["../../plotly/plotly.min.js"], f"{chapter}: plotly.js loaded as {loads}, expected once, locally"
    ids = []
    for k in range(n):
        state = page.evaluate(EXPLORE_JS, k)
        ids.append(state["id"])
        assert state["drawn"] and state["controls"], f"{chapter}: figure {state['id']} is not drawn or has no control"
        for c in state["controls"]:
            assert c["n"] >= 2, f"{state['id']}: control {c['name']} offers {c['n']} value"
            before = page.evaluate(EXPLORE_JS, k)["data"]
            new = (int(c["value"]) + 1) % c["n"]
            page.evaluate(SET_CONTROL_JS, [k, c["name"], new])
            page.wait_for_timeout(50)
            after = page.evaluate(EXPLORE_JS, k)["data"]
            assert after != before, f"{state['id']}: moving {c['name']} to {new} did not change the figure"
            page.evaluate(SET_CONTROL_JS, [k, c["name"], c["value"]])
    assert len(set(ids)) == len(ids), f"{chapter}: duplicate figure ids {ids}"
    assert not p.errors, f"{chapter}: JavaScript errors: {p.errors}"
    assert not p.external, f"{chapter}: requests left the book: {p.external}"
