"""The documentation site's own pages: their Python blocks run, the API page is complete,
and every public callable has a doctest.

Every ```` ```python ```` block of the pages under ``docs/`` (but the migration guides,
which ``test_docs_migration.py`` runs, and the pages that other files own:
``docs/recipes.md``, ``docs/experiments/``) runs on its own in a fresh namespace, as the
README's blocks do in ``test_readme.py``. Code that is shown but not run is written in a
``{code-block}`` directive, which this parser skips.
"""

from __future__ import annotations

import inspect
import pathlib
import re

import pytest

import optax_decay

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
OWN_PAGES = sorted(
    p
    for p in DOCS.rglob("*.md")
    if p.relative_to(DOCS).parts[0] not in ("_build", "experiments", "migration", "notebooks")
    and p.name != "recipes.md"
)
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(path: pathlib.Path) -> list[tuple[int, str]]:
    """``(first code line number, code)`` of each ```python block of ``path``."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


def run_block(path: pathlib.Path, lineno: int, code: str) -> None:
    # Pad with blank lines so that a traceback's line numbers are the page's.
    exec(compile("\n" * (lineno - 1) + code, str(path), "exec"), {"__name__": "__docs__"})


BLOCKS = [(p, n, c) for p in OWN_PAGES for n, c in python_blocks(p)]


def test_the_pages_have_python_blocks():
    # Guards the parser and the page list: an empty list would pass the test below vacuously.
    assert len(OWN_PAGES) >= 15, OWN_PAGES
    assert len(BLOCKS) >= 20, len(BLOCKS)


@pytest.mark.parametrize(
    "path, lineno, code",
    BLOCKS,
    ids=[f"{p.relative_to(DOCS)}:{n}" for p, n, _ in BLOCKS],
)
def test_docs_block_runs(path, lineno, code):
    run_block(path, lineno, code)


def test_api_page_documents_every_public_name():
    api = (DOCS / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\.\. auto(?:function|class|exception):: (\w+)", api, re.M))
    assert documented == set(optax_decay.__all__)


@pytest.mark.parametrize("name", optax_decay.__all__)
def test_every_public_callable_has_a_doctest(name):
    obj = getattr(optax_decay, name)
    if inspect.isclass(obj):
        pytest.skip("a state, layout or warning class: documented by its factory's example")
    assert ">>>" in (inspect.getdoc(obj) or ""), f"{name} has no doctest example"
