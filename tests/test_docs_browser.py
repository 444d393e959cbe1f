"""The built documentation site, checked in headless Chromium (slow tier; CI runs it
after ``bash scripts/docs.sh``).

Chromium renders the index, one method page and the API page (``--dump-dom`` after a
virtual-time budget that lets MathJax finish, and a ``--screenshot`` of each saved to
``docs/_build/screenshots/``). On the rendered DOM: every public name is on the API page,
math went through MathJax (its CommonHTML output elements are there, and no raw ``\\(``,
``\\[`` or ``$...$`` is left in the text). Every built HTML page's local links, ``#anchors``
included, point at files and ids that exist (Sphinx's ``linkcheck`` would need the
internet; this needs none). Skips when the site is not built or Chromium is missing.
"""

from __future__ import annotations

import html.parser
import pathlib
import re
import shutil
import subprocess
import urllib.parse

import pytest

import optax_decay

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
SITE = ROOT / "docs" / "_build" / "html"
SHOTS = ROOT / "docs" / "_build" / "screenshots"
PAGES = {"index": "index.html", "method": "methods/sparsity.html", "api": "api.html"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--virtual-time-budget=20000",  # MathJax typesets asynchronously
]


def _require_site() -> None:
    if not (SITE / "index.html").is_file():
        pytest.skip("docs/_build/html is not built: bash scripts/docs.sh")
    if CHROMIUM is None:
        pytest.skip("chromium is not installed: apt-get install chromium")


def _chromium(*args: str) -> str:
    run = subprocess.run(
        [CHROMIUM, *FLAGS, *args], capture_output=True, text=True, timeout=180, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


class _Text(html.parser.HTMLParser):
    """The visible text of a page (scripts, styles and MathJax's source copies dropped)."""

    SKIP = {"script", "style", "noscript"}

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skipping += 1

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def _visible_text(dom: str) -> str:
    parser = _Text()
    parser.feed(dom)
    return " ".join(parser.parts)


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    _require_site()
    SHOTS.mkdir(parents=True, exist_ok=True)
    doms = {}
    for name, page in PAGES.items():
        url = (SITE / page).as_uri()
        doms[name] = _chromium("--dump-dom", url)
        shot = SHOTS / f"{name}.png"
        shot.unlink(missing_ok=True)
        _chromium(f"--screenshot={shot}", "--window-size=1280,1600", url)
        assert shot.is_file() and shot.stat().st_size > 10_000, shot
    return doms


def test_api_page_lists_every_public_name(rendered):
    dom = rendered["api"]
    ids = set(re.findall(r'id="optax_decay\.(\w+)"', dom))
    assert set(optax_decay.__all__) <= ids, set(optax_decay.__all__) - ids


@pytest.mark.parametrize("page", sorted(PAGES))
def test_math_is_rendered(rendered, page):
    dom = rendered[page]
    assert "mathjax/MathJax.js" in dom, "MathJax is not loaded from the local copy"
    assert "cdn" not in " ".join(re.findall(r'<script[^>]*src="([^"]+)"', dom)).lower()
    assert dom.count('class="mjx-chtml') > 0, "no MathJax output on the page"
    text = _visible_text(dom)
    for raw in ("\\(", "\\)", "\\[", "\\]", "$$"):
        assert raw not in text, f"raw math {raw!r} left on {page}"
    assert not re.search(r"\$[^$\s][^$]*\\[a-zA-Z]+[^$]*\$", text), "raw $...$ math left"


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        for key in ("href", "src"):
            if a.get(key) and (tag != "link" or key == "href"):
                self.hrefs.append(a[key])


def _parse(path: pathlib.Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


def test_no_broken_internal_links():
    _require_site()
    pages = sorted(SITE.rglob("*.html"))
    parsed = {p: _parse(p) for p in pages}
    broken = []
    for page, links in parsed.items():
        for href in links.hrefs:
            url = urllib.parse.urlsplit(href)
            if url.scheme or url.netloc or href.startswith(("mailto:", "javascript:", "data:")):
                continue
            target = (page.parent / urllib.parse.unquote(url.path)).resolve() if url.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(SITE)}: {href}")
            elif url.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else _parse(target).ids
                if urllib.parse.unquote(url.fragment) not in ids:
                    broken.append(f"{page.relative_to(SITE)}: {href} (no such anchor)")
    assert len(pages) > 20
    assert not broken, "\n".join(broken[:50])
