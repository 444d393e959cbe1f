"""Sphinx configuration of the optax_decay documentation (MyST markdown, myst-nb, furo).

Build: ``bash scripts/docs.sh`` (warnings are errors). Math is typeset by MathJax 2 from
Debian's ``libjs-mathjax``, copied into ``_static/mathjax`` of the build: no CDN.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `import optax_decay` and `from examples import ...`
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import optax_decay  # noqa: E402

project = "optax_decay"
author = "the optax_decay authors"
copyright = "the optax_decay authors"  # noqa: A001
release = version = optax_decay.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

exclude_patterns = ["_build", "jupyter_execute", "**/.ipynb_checkpoints", "notebooks/out"]
html_theme = "furo"
html_title = f"optax_decay {release}"
html_static_path: list[str] = []

# MyST: $...$ and $$...$$ math, ::: fences, heading anchors for links like page.md#section.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# Notebooks: executed here, once per build ("force"), and not by the test suite (see
# docs/contributing.md). A cell that fails fails the build.
nb_execution_mode = "force"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# API reference from the Google-style docstrings.
autodoc_typehints = "none"  # the types are in each docstring's Args
autodoc_member_order = "bysource"
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# MathJax 2 (Debian's libjs-mathjax), local: only Sphinx's math spans are typeset.
MATHJAX_SRC = pathlib.Path(os.environ.get("MATHJAX_DIR", "/usr/share/javascript/mathjax"))
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS_CHTML"
mathjax2_config = {
    "tex2jax": {
        "inlineMath": [["\\(", "\\)"]],
        "displayMath": [["\\[", "\\]"]],
        "processEscapes": True,
        "ignoreClass": "document",
        "processClass": "math|output_area",
    },
    "CommonHTML": {"linebreaks": {"automatic": True}},
    "messageStyle": "none",
}
myst_update_mathjax = False
# What MathJax needs for TeX input and CommonHTML output (about 3 MB of the 54 MB package).
MATHJAX_PARTS = [
    "MathJax.js",
    "config/TeX-AMS_CHTML.js",
    "extensions",
    "jax/element",
    "jax/input/TeX",
    "jax/output/CommonHTML",
    "fonts/HTML-CSS/TeX/woff",
    "fonts/HTML-CSS/TeX/otf",
]


def _copy_mathjax(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    if not (MATHJAX_SRC / "MathJax.js").is_file():
        raise RuntimeError(
            f"MathJax not found in {MATHJAX_SRC}: `apt-get install libjs-mathjax` "
            "(scripts/docs.sh does it) or set MATHJAX_DIR"
        )
    dest = pathlib.Path(app.outdir) / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        src, out = MATHJAX_SRC / part, dest / part
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, out, dirs_exist_ok=True)
        else:
            shutil.copyfile(src, out)


# A link to a folder (`[out/](out/)`) works on GitHub but has no page here: it becomes a link
# to the folder's summary.md when there is one, and plain text otherwise.
_FOLDER_LINK = re.compile(r"\[([^\]]+)\]\((?!\w+://)([^)\s#]+/)\)")


def _folder_links(text: str, base: pathlib.Path) -> str:
    def replace(match: re.Match) -> str:
        label, target = match.groups()
        if (base / target / "summary.md").is_file():
            return f"[{label}]({target}summary.md)"
        return label

    return _FOLDER_LINK.sub(replace, text)


def _on_source_read(app, docname, source):
    base = pathlib.Path(app.env.doc2path(docname)).parent
    source[0] = _folder_links(source[0], base)


def _on_include_read(app, relative_path, parent_docname, content):
    base = (pathlib.Path(app.srcdir) / relative_path).parent
    content[0] = _folder_links(content[0], base)


def setup(app):
    app.connect("source-read", _on_source_read)
    app.connect("include-read", _on_include_read)
    app.connect("build-finished", _copy_mathjax)
