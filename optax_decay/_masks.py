"""Masks: which leaves get weight decay.

A mask is a pytree of Python bools with the structure of the params (or a
prefix of it), or a callable ``params -> such a pytree``, exactly as in
:func:`optax.masked`; ``True`` means "decay this leaf". Masking is delegated to
:func:`optax.masked`; this module adds the checks and the usual mask.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np
import optax

MASK_STRUCTURE_MSG = (
    "`mask` does not match the structure of the params.\n"
    "  mask:   {mask}\n  params: {params}\n"
    "Build the mask from the params themselves, e.g. "
    "`optax_decay.weight_decay_mask` or `jax.tree.map(lambda p: p.ndim >= 2, params)`, "
    "or pass that callable as `mask`."
)

MASK_LEAF_MSG = (
    "`mask` leaves must be Python bools (True: decay this leaf), got {leaf!r} of type "
    "{kind}. A mask is static: build it with Python comparisons such as "
    "`p.ndim >= 2`, not with traced arrays."
)

MaskOrFn = Any | Callable[[Any], Any] | None


def _is_none(x: Any) -> bool:
    return x is None


def resolve_mask(mask: MaskOrFn, params: Any) -> Any:
    """The full mask for ``params``: a tree of bools with the params' structure.

    Evaluates a callable mask, broadcasts a prefix mask to every leaf below it
    and checks structure and leaf types, raising a clear error otherwise.
    """
    tree = mask(params) if callable(mask) else mask
    for leaf in jax.tree.leaves(tree):
        if not isinstance(leaf, (bool, np.bool_)):
            raise TypeError(MASK_LEAF_MSG.format(leaf=leaf, kind=type(leaf).__name__))
    try:
        return jax.tree.map(
            lambda m, sub: jax.tree.map(lambda _: bool(m), sub, is_leaf=_is_none),
            tree,
            params,
            is_leaf=_is_none,
        )
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(
            MASK_STRUCTURE_MSG.format(
                mask=jax.tree.structure(tree), params=jax.tree.structure(params)
            )
        ) from err


def masked(inner: optax.GradientTransformation, mask: MaskOrFn) -> optax.GradientTransformation:
    """``optax.masked(inner, mask)`` with the mask checked; ``inner`` if mask is None."""
    if mask is None:
        return inner
    return optax.masked(inner, functools.partial(resolve_mask, mask))


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def weight_decay_mask(
    params: Any, *, min_ndim: int = 2, exclude: Iterable[str] = ("bias", "scale")
) -> Any:
    """The usual decay mask: decay matrices and kernels, skip biases and norm scales.

    A leaf is decayed when it has at least ``min_ndim`` dimensions and no key on
    its path is in ``exclude``. Works on plain dicts, Flax Linen ``params`` and
    Flax NNX ``State`` (it maps over the same pytree the optimizer sees), and
    can be passed as a callable: ``mask=optax_decay.weight_decay_mask``.

    Args:
      params: the parameter pytree.
      min_ndim: smallest rank that is decayed; 2 skips vectors and scalars.
      exclude: path keys that are never decayed (Flax names biases ``bias`` and
        norm scales ``scale``).

    Returns:
      A pytree of bools with the structure of ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> weight_decay_mask({"dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)}})
      {'dense': {'bias': False, 'kernel': True}}
    """
    exclude = frozenset(exclude)

    def decide(path, leaf):
        if leaf is None:
            return None
        names = {_key_name(k) for k in path}
        return bool(np.ndim(leaf) >= min_ndim and not names & exclude)

    return jax.tree_util.tree_map_with_path(decide, params, is_leaf=_is_none)
