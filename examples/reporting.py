"""What the scripts write: ``results.json``, markdown tables, ``summary.md`` and figures.

``results.json`` is ``{"config": {...}, "results": [one record per run], ...}``, each record
holding at least ``optimizer``, ``learning_rate``, ``weight_decay``, ``test_accuracy`` and
``weight_norm``.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

import matplotlib
import matplotlib.patches
import matplotlib.pyplot as plt
import numpy as np

matplotlib.use("Agg")


def markdown_table(rows: Sequence[dict], columns=None, align: str | None = None) -> str:
    """``columns``: (header, key, format spec) triples (default: each key of ``rows[0]``, as
    text); ``align``: one ``l`` or ``r`` per column (``None``: no alignment marks)."""
    columns = columns or [(k, k, "") for k in rows[0]]
    marks = {None: "---", "l": "---", "r": "---:"}
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |"]
    lines.append("|" + "|".join(marks[a] for a in (align or [None] * len(columns))) + "|")
    lines += ["| " + " | ".join(format(row[k], f) for _, k, f in columns) + " |" for row in rows]
    return "\n".join(lines)


def spread(values, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation (``ddof=1``; 0 for one seed) over ``axis``."""
    values = np.asarray(values, float)
    ddof = 1 if values.shape[axis] > 1 else 0
    return values.mean(axis), values.std(axis, ddof=ddof)


def mean_pm(values, fmt: str = ".4f") -> str:
    """``"0.8512 ± 0.0031"``: the mean and sample std of ``values`` (one number per seed)."""
    mean, std = spread(values)
    return f"{format(float(mean), fmt)} ± {format(float(std), fmt)}"


def plot_seeds(ax, x, values, *, label: str, **style):
    """``values[i, s]`` at ``x[i]``: every seed as a small marker, the mean +- std as error bars."""
    values = np.asarray(values, float)
    mean, std = spread(values)
    line = ax.errorbar(x, mean, yerr=std, capsize=3, label=label, **style)
    ax.plot(np.repeat(x, values.shape[1]), values.ravel(), ".", ms=3, color=line[0].get_color())
    return line


def save_figure(fig, path: pathlib.Path, dpi: int) -> None:
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def write_json(path: pathlib.Path, payload: dict) -> None:
    """``payload`` as indented JSON, the folder created if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def write_outputs(out: pathlib.Path, config: dict, records: list, summary: str, extra=None):
    """``results.json`` (config, records and ``extra``) and ``summary.md`` into ``out``."""
    write_json(out / "results.json", {"config": config, "results": records, **(extra or {})})
    (out / "summary.md").write_text(summary.rstrip() + "\n")


def heatmap(
    ax,
    values: np.ndarray,
    rows: Sequence[float],
    cols: Sequence[float],
    *,
    title: str,
    row_label: str = "learning rate alpha",
    col_label: str = "weight decay lambda",
    fmt: str = ".3f",
    mark: np.ndarray | None = None,
    text: np.ndarray | None = None,
    clim: tuple[float, float] | None = None,
):
    """``values[i, j]`` drawn at row ``rows[i]``, column ``cols[j]``, each cell labelled
    ``text[i, j]`` (default: the value in ``fmt``); ``clim``: the color range (default: the
    finite values'); ``mark`` (bool, same shape) outlines cells, e.g. the best per column."""
    values = np.asarray(values, float)
    image = ax.imshow(values, cmap="viridis", aspect="auto", origin="lower")
    if clim is not None:
        image.set_clim(*clim)
    ax.set_xticks(range(len(cols)), [f"{c:.0e}" for c in cols], rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), [f"{r:.0e}" for r in rows])
    ax.set(xlabel=col_label, ylabel=row_label, title=title)
    finite = values[np.isfinite(values)]
    lo, hi = clim or ((finite.min(), finite.max()) if finite.size else (0.0, 0.0))
    box = dict(fill=False, edgecolor="red", linewidth=2)
    for (i, j), v in np.ndenumerate(values):
        label = (format(v, fmt) if np.isfinite(v) else "nan") if text is None else text[i, j]
        color = "white" if np.isfinite(v) and v < (lo + hi) / 2 else "black"
        ax.text(j, i, label, ha="center", va="center", fontsize=7, color=color)
        if mark is not None and mark[i, j]:
            ax.add_patch(matplotlib.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, **box))
    return image
