"""The scripts' command lines: the experiments' common flags, and bad input as one line.

Every script parses its flags with :class:`Parser` and runs ``main`` under :func:`run_cli`:
bad input (argparse's own errors, a :class:`UsageError`, a missing dataset) is printed as
one ``error: ...`` line on stderr, without a traceback, and exits with status 2.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from examples.data import DATASETS, DEFAULT_DIR, Dataset, DatasetMissingError, load


class UsageError(ValueError):
    """Bad command-line input: reported as one line, without a traceback."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are :class:`UsageError` (``--help`` still exits)."""

    def __init__(self, doc: str, **kwargs):
        super().__init__(
            description=doc.split("\n\n")[0],
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kwargs,
        )

    def error(self, message: str):
        raise UsageError(message)


def run_cli(
    main: Callable[[Sequence[str] | None], object],
    argv: Sequence[str] | None = None,
    *,
    failures: tuple[type[BaseException], ...] = (),
):
    """Runs ``main``; bad input becomes one line on stderr and exit code 2.

    The errors in ``failures`` (a run that cannot go on) are reported the same way, with
    exit code 1.
    """
    try:
        return main(argv)
    except (UsageError, DatasetMissingError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except failures as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


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


def check_positive(**values: int | None) -> None:
    """Raises a UsageError naming the first flag (``batch_size`` -> ``--batch-size``) below 1."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise UsageError(f"`--{name.replace('_', '-')}` must be >= 1, got {value}")


def base_parser(doc: str, *, default_steps: int, quick_steps: int, out: str) -> Parser:
    """The flags every experiment has; ``doc``'s first paragraph is the description."""
    parser = Parser(doc)
    parser.add_argument("--seed", type=int, default=0, help="the first seed (init, batch order)")
    parser.add_argument(
        "--seeds",
        type=int,
        help="number of seeds, trained at once as one more vmapped axis: "
        "--seed, --seed+1, ...; default 3, --quick 2",
    )
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
    if args.seeds is None:
        args.seeds = 2 if args.quick else 3
    check_positive(
        steps=args.steps, batch_size=args.batch_size, train_size=args.train_size, seeds=args.seeds
    )
    args.seed_list = list(range(args.seed, args.seed + args.seeds))
    return args


def load_data(args: argparse.Namespace) -> Dataset:
    data = load(args.dataset, args.data_dir, train_size=args.train_size, seed=args.seed)
    check_batch_size(args.batch_size, data)
    return data


def check_batch_size(batch_size: int, data: Dataset) -> None:
    if batch_size > len(data.x_train):
        raise UsageError(
            f"`--batch-size` {batch_size} is larger than the training set "
            f"({len(data.x_train)} images)"
        )


def config_of(args: argparse.Namespace) -> dict:
    """The settings of a run, JSON-ready (private ``_`` entries dropped)."""
    return {
        k: (str(v) if isinstance(v, pathlib.Path) else v)
        for k, v in vars(args).items()
        if not k.startswith("_")
    }
