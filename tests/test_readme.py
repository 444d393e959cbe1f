"""README.md's Python blocks run as they stand, and the package ships its LICENSE.

Every fenced ```` ```python ```` block of README.md is executed on its own, in a fresh
namespace: each block is written to be copied alone (it has its own imports and
definitions, and none uses a name from another block), so a block that leans on an
earlier one fails here as it would for a reader. The blocks are compiled with their
README line numbers, so a traceback points at the README line. They run under the
suite's ``filterwarnings = error`` and conftest's 8 CPU devices, like every other test.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LICENSE = ROOT / "LICENSE"


def python_blocks(text: str) -> list[tuple[int, str, str]]:
    """``(first code line number, nearest heading above, code)`` of each ```python block."""
    blocks, heading, lines = [], "", text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#") and not line.startswith("#!"):
            heading = line.lstrip("#").strip()
        fence = re.match(r"^(`{3,}|~{3,})\s*(\S*)", line)
        if fence:
            marker, lang = fence.groups()
            end = i + 1
            while end < len(lines) and not lines[end].startswith(marker):
                end += 1
            if lang in ("python", "py"):
                blocks.append((i + 2, heading, "\n".join(lines[i + 1 : end]) + "\n"))
            i = end  # skip the block: a '#' inside it is a comment, not a heading
        i += 1
    return blocks


def block_id(index: int, heading: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")
    return f"{index}-{slug or 'top'}"


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_readme_has_python_blocks():
    # Guards the parser: if it found nothing, the parametrized test would pass vacuously.
    assert len(BLOCKS) >= 3, BLOCKS


@pytest.mark.parametrize(
    "lineno, code",
    [(lineno, code) for lineno, _, code in BLOCKS],
    ids=[block_id(i, heading) for i, (_, heading, _) in enumerate(BLOCKS)],
)
def test_readme_block_runs(lineno, code):
    # Pad with blank lines so that line numbers in a traceback are README.md's.
    compiled = compile("\n" * (lineno - 1) + code, str(README), "exec")
    exec(compiled, {"__name__": "__readme__"})


def test_license_is_apache_2():
    text = LICENSE.read_text(encoding="utf-8")
    head = [line.strip() for line in text.splitlines() if line.strip()][:3]
    assert head == [
        "Apache License",
        "Version 2.0, January 2004",
        "http://www.apache.org/licenses/",
    ]
    assert "END OF TERMS AND CONDITIONS" in text


def test_license_in_built_metadata(tmp_path):
    """The wheel's metadata names LICENSE and carries it in ``*.dist-info/licenses/``.

    Only the metadata is built (about a second), from a copy of the project, so the
    working tree gets no ``build/`` or ``*.egg-info``.
    """
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "optax_decay", src / "optax_decay", ignore=shutil.ignore_patterns("__pycache__")
    )
    (src / "out").mkdir()
    build = (
        "from setuptools import build_meta; "
        "print(build_meta.prepare_metadata_for_build_wheel('out'))"
    )
    run = subprocess.run(
        [sys.executable, "-c", build], cwd=src, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    dist_info = src / "out" / run.stdout.strip().splitlines()[-1]
    metadata = (dist_info / "METADATA").read_text(encoding="utf-8")
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert "License-File: LICENSE" in metadata.splitlines()
    assert (dist_info / "licenses" / "LICENSE").read_bytes() == LICENSE.read_bytes()
