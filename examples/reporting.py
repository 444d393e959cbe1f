"""What the experiment scripts share: the command line, bad-input handling and their outputs.

Each experiment writes to its ``--out`` folder:
- ``results.json``: ``{"config": {...}, "results": [one record per run]}``, each
  record holding at least ``optimizer``, ``learning_rate``, ``weight_decay``,
  ``test_accuracy`` and ``weight_norm``;
- PNG figures (heatmaps carry their values);
- ``summary.md``: a short markdown report.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Callable, Iterable, Sequence

import matplotlib
import matplotlib.patches
import numpy as np
from fashion_data import DATASETS, DEFAULT_DIR, Dataset, DatasetMissingError, load

matplotlib.use("Agg")


class UsageError(ValueError):
    """Bad command-line input: reported as one line, without a traceback."""


def parse_floats(name: str, text: str) -> list[float]:
    """``"1e-3,1e-2"`` -> ``[0.001, 0.01]``; an empty list or a bad number is a UsageError."""
    items = [t for t in text.replace(" ", "").split(",") if t]
    if not items:
        raise UsageError(f"`{name}` is empty: give at least one value, e.g. `{name} 1e-3,1e-2`")
    try:
        values = [float(t) for t in items]
    except ValueError as err:
        raise UsageError(f"`{name}`: {err}; give comma-separated numbers") from None
    if any(not np.isfinite(v) or v < 0 for v in values):
        raise UsageError(f"`{name}` values must be finite and >= 0, got {text!r}")
    return values


def parse_names(name: str, text: str, allowed: Iterable[str]) -> list[str]:
    """Comma-separated names, each of which must be in ``allowed``; a repeat counts once."""
    allowed = list(allowed)
    items = [t for t in text.replace(" ", "").split(",") if t]
    if not items:
        raise UsageError(f"`{name}` is empty: choose from {', '.join(allowed)}")
    unknown = [t for t in items if t not in allowed]
    if unknown:
        raise UsageError(
            f"`{name}`: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(allowed)}"
        )
    return list(dict.fromkeys(items))


def base_parser(doc: str, *, default_steps: int, quick_steps: int, out: str):
    """The flags every experiment has; ``doc``'s first paragraph is the description."""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0, help="init, split and batch-order seed")
    parser.add_argument("--steps", type=int, help=f"default {default_steps}; --quick {quick_steps}")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dataset", choices=DATASETS, help="default fashion_mnist; --quick digits")
    parser.add_argument("--data-dir", type=pathlib.Path, default=DEFAULT_DIR)
    parser.add_argument("--train-size", type=int, help="keep a random subset of the train split")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(out))
    parser.add_argument(
        "--quick", action="store_true", help="digits and a few steps: under a minute, for tests"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(_default_steps=default_steps, _quick_steps=quick_steps)
    return parser


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fills the quick-dependent defaults and checks the numbers."""
    if args.steps is None:
        args.steps = args._quick_steps if args.quick else args._default_steps
    if args.dataset is None:
        args.dataset = "digits" if args.quick else "fashion_mnist"
    if args.steps < 1:
        raise UsageError(f"`--steps` must be >= 1, got {args.steps}")
    if args.batch_size < 1:
        raise UsageError(f"`--batch-size` must be >= 1, got {args.batch_size}")
    if args.train_size is not None and args.train_size < 1:
        raise UsageError(f"`--train-size` must be >= 1, got {args.train_size}")
    return args


def load_data(args: argparse.Namespace) -> Dataset:
    data = load(args.dataset, args.data_dir, train_size=args.train_size, seed=args.seed)
    if args.batch_size > len(data.x_train):
        raise UsageError(
            f"`--batch-size` {args.batch_size} is larger than the training set "
            f"({len(data.x_train)} images)"
        )
    return data


def config_of(args: argparse.Namespace) -> dict:
    """The settings of a run, JSON-ready (private ``_`` entries dropped)."""
    return {
        k: (str(v) if isinstance(v, pathlib.Path) else v)
        for k, v in vars(args).items()
        if not k.startswith("_")
    }


def run_cli(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None):
    """Runs ``main``; bad input and a missing dataset become one line on stderr and exit code 2."""
    try:
        return main(argv)
    except (UsageError, DatasetMissingError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """``columns``: (header, key, format spec) triples."""
    lines = [
        "| " + " | ".join(h for h, _, _ in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(format(row[k], f) for _, k, f in columns) + " |")
    return "\n".join(lines)


def write_outputs(
    out: pathlib.Path, config: dict, records: list[dict], summary: str, extra: dict | None = None
) -> None:
    """``results.json`` (config, records and ``extra``) and ``summary.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {"config": config, "results": records, **(extra or {})}
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "summary.md").write_text(summary.rstrip() + "\n")


def heatmap(
    ax,
    values: np.ndarray,
    rows: Sequence[float],
    cols: Sequence[float],
    *,
    title: str,
    row_label: str,
    col_label: str,
    fmt: str = ".3f",
    cmap: str = "viridis",
    mark: np.ndarray | None = None,
):
    """``values[i, j]`` drawn at row ``rows[i]``, column ``cols[j]``, each cell labelled.

    ``mark`` (bool, same shape) outlines cells, e.g. the best learning rate per column.
    """
    values = np.asarray(values, float)
    image = ax.imshow(values, cmap=cmap, aspect="auto", origin="lower")
    ax.set_xticks(range(len(cols)), [f"{c:.0e}" for c in cols], rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), [f"{r:.0e}" for r in rows])
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    ax.set_title(title)
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            ax.text(
                j,
                i,
                format(v, fmt) if np.isfinite(v) else "nan",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if np.isfinite(v) and v < middle else "black",
            )
            if mark is not None and mark[i, j]:
                ax.add_patch(
                    matplotlib.patches.Rectangle(
                        (j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2
                    )
                )
    return image
