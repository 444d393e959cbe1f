"""The scripts' command lines: the experiments' common flags, and bad input as one line.

Every script parses its flags with :class:`Parser` and runs ``main`` under :func:`run_cli`.
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


BAD_INPUT = (UsageError, DatasetMissingError)  # exit status 2; run_cli's `failures`: 1


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are :class:`UsageError` (``--help`` still exits)."""

    def __init__(self, doc: str, **kwargs):
        raw = argparse.RawDescriptionHelpFormatter
        super().__init__(description=doc.split("\n\n")[0], formatter_class=raw, **kwargs)

    def error(self, message: str):
        raise UsageError(message)


def run_cli(main: Callable, argv: Sequence[str] | None = None, *, failures: tuple = ()):
    """Runs ``main``; bad input (argparse's errors, a :class:`UsageError`, a missing dataset)
    becomes one ``error: ...`` line on stderr and exit code 2, the errors in ``failures`` exit 1."""
    try:
        return main(argv)
    except (*BAD_INPUT, *failures) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2 if isinstance(err, BAD_INPUT) else 1) from None


def parse_floats(name: str, text: str | None, positive: bool = False) -> list[float] | None:
    """``"1e-3,1e-2"`` -> ``[0.001, 0.01]``, ``None`` -> ``None``; an empty list or a bad number
    (negative, or 0 with ``positive``) is a UsageError."""
    if text is None:
        return None
    items = [t for t in text.replace(" ", "").split(",") if t]
    if not items:
        raise UsageError(f"`{name}` is empty: give at least one value, e.g. `{name} 1e-3,1e-2`")
    try:
        values = [float(t) for t in items]
    except ValueError as err:
        raise UsageError(f"`{name}`: {err}; give comma-separated numbers") from None
    if any(not np.isfinite(v) or v < 0 for v in values):
        raise UsageError(f"`{name}` values must be finite and >= 0, got {text!r}")
    if positive and min(values) <= 0:
        raise UsageError(f"`{name}` must be > 0, got {text!r}")
    return values


def parse_ints(name: str, text: str) -> tuple[int, ...]:
    """``"8,16"`` -> ``(8, 16)``: comma-separated integers >= 1, else a UsageError."""
    values = parse_floats(name, text)
    if any(v < 1 or v != int(v) for v in values):
        raise UsageError(f"`{name}` takes comma-separated integers >= 1, got {text!r}")
    return tuple(int(v) for v in values)


def parse_names(name: str, text: str, allowed: Iterable[str]) -> list[str]:
    """Comma-separated names, each of which must be in ``allowed``; a repeat counts once."""
    allowed = list(allowed)
    items = [t for t in text.replace(" ", "").split(",") if t]
    if not items:
        raise UsageError(f"`{name}` is empty: choose from {', '.join(allowed)}")
    if unknown := ", ".join(repr(t) for t in items if t not in allowed):
        raise UsageError(f"`{name}`: unknown {unknown}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def check_positive(args: argparse.Namespace, *names: str) -> None:
    """Raises a UsageError naming the first flag (``batch_size`` -> ``--batch-size``) below 1."""
    for name in names:
        if (value := getattr(args, name)) is not None and value < 1:
            raise UsageError(f"`--{name.replace('_', '-')}` must be >= 1, got {value}")


def base_parser(doc: str, default_steps: int, quick_steps: int, out: str) -> Parser:
    """The flags every experiment has; ``doc``'s first paragraph is the description."""
    parser = Parser(doc)
    add = parser.add_argument
    add("--seed", type=int, default=0, help="the first seed (init, batch order)")
    seeds = "number of seeds, trained at once as one more vmapped axis: --seed, --seed+1, ..."
    add("--seeds", type=int, help=f"{seeds}; default 3, --quick 2")
    add("--steps", type=int, help=f"default {default_steps}; --quick {quick_steps}")
    add("--batch-size", type=int, default=128)
    add("--dataset", choices=DATASETS, help="default fashion_mnist; --quick digits")
    add("--data-dir", type=pathlib.Path, default=DEFAULT_DIR)
    add("--train-size", type=int, help="keep a random subset of the train split")
    add("--out", type=pathlib.Path, default=pathlib.Path(out))
    add("--quick", action="store_true", help="digits and a few steps: under a minute, for tests")
    add("--no-progress", action="store_true", help="hide the progress bars")
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
    check_positive(args, "steps", "batch_size", "train_size", "seeds")
    args.seed_list = list(range(args.seed, args.seed + args.seeds))
    return args


def load_data(args: argparse.Namespace) -> Dataset:
    data = load(args.dataset, args.data_dir, train_size=args.train_size, seed=args.seed)
    check_batch_size(args.batch_size, data)
    return data


def check_batch_size(batch_size: int, data: Dataset) -> None:
    if batch_size > (size := len(data.x_train)):
        raise UsageError(
            f"`--batch-size` {batch_size} is larger than the training set ({size} images)"
        )


def config_of(args: argparse.Namespace) -> dict:
    """The settings of a run, JSON-ready (private ``_`` entries dropped)."""
    json_ready = lambda v: str(v) if isinstance(v, pathlib.Path) else v
    return {k: json_ready(v) for k, v in vars(args).items() if not k.startswith("_")}
