"""The migration guides' checks: each Python block of ``docs/migration/*.md`` runs, and a
wrong conversion makes it fail.

The blocks compare ``optax_decay`` with ``optax.adamw`` (fast tier) and with
``torch.optim`` and timm's parameter groups (slow tier, skipped without torch). Each
negative control runs a block with its conversion replaced by the naive one (the same
number passed as ``weight_decay`` to the other convention) and expects the comparison to
fail, so that the checks on the pages can fail.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from test_docs_pages import python_blocks, run_block

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "migration"
PAGES = sorted(DOCS.glob("*.md"))
NEEDS = ("torch", "timm")


def _blocks():
    params = []
    for page in PAGES:
        for lineno, code in python_blocks(page):
            slow = any(f"import {m}" in code for m in NEEDS)
            marks = [pytest.mark.slow] if slow else []
            params.append(pytest.param(page, lineno, code, marks=marks, id=f"{page.stem}:{lineno}"))
    return params


BLOCKS = _blocks()


def _block(page: str) -> tuple[pathlib.Path, int, str]:
    path = DOCS / page
    (lineno, code), *_ = python_blocks(path)
    return path, lineno, code


def _skip_without_torch(code: str) -> None:
    if "import torch" in code:
        pytest.importorskip("torch")


def test_every_guide_has_a_check():
    assert {p.stem for p in PAGES} >= {"optax", "torch", "timm"}
    assert all(python_blocks(DOCS / f"{s}.md") for s in ("optax", "torch", "timm"))


@pytest.mark.parametrize("path, lineno, code", BLOCKS)
def test_migration_block_runs(path, lineno, code):
    _skip_without_torch(code)
    run_block(path, lineno, code)


# (page, the conversion in its block, the naive replacement that the check must reject)
CONTROLS = [
    pytest.param("optax.md", "od.coupled_to_paper(wd, lr)", "wd", id="optax-unconverted"),
    pytest.param(
        "torch.md",
        "None,\n        od.adamw(lr, wd, coupled=True),",
        "None,\n        od.adamw(lr, wd),",
        marks=pytest.mark.slow,
        id="torch-paper-form",
    ),
    pytest.param(
        "torch.md",
        "od.adam_l2(lr, wd)",
        "od.adamw(lr, wd, coupled=True)",
        marks=pytest.mark.slow,
        id="torch-adam-l2",
    ),
    pytest.param(
        "timm.md", "x.ndim > 1", "x.ndim >= 1", marks=pytest.mark.slow, id="timm-bias-decayed"
    ),
]


@pytest.mark.parametrize("page, right, wrong", CONTROLS)
def test_a_wrong_conversion_fails_the_check(page, right, wrong):
    path, lineno, code = _block(page)
    _skip_without_torch(code)
    assert right in code, f"{page} no longer holds {right!r}: update the control"
    with pytest.raises(AssertionError):
        run_block(path, lineno, code.replace(right, wrong, 1))


@pytest.mark.slow
def test_timm_groups_are_timms_own():
    """The groups the timm page writes by hand equal timm's ``param_groups_weight_decay``."""
    torch = pytest.importorskip("torch")
    from helpers import timm_optim

    try:
        groups_module = timm_optim("_param_groups")
    except ImportError as err:  # it imports timm.models, which needs torchvision
        pytest.skip(f"timm's _param_groups does not load here: {err}")
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    groups = groups_module.param_groups_weight_decay(model, weight_decay=0.5)
    by_decay = {g["weight_decay"]: {id(p) for p in g["params"]} for g in groups}
    params = list(model.parameters())
    assert by_decay[0.5] == {id(p) for p in params if p.ndim > 1}
    assert by_decay[0.0] == {id(p) for p in params if p.ndim <= 1}
    np.testing.assert_equal(len(params), 4)
