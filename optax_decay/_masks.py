"""Masks: which leaves, or which elements, get weight decay.

A mask is a pytree with the structure of the params (or a prefix of it), or a
callable ``params -> such a pytree``, as in :func:`optax.masked`. Its leaves
are either

* Python bools, ``True`` meaning "decay this leaf" (a bool above a subtree
  covers the whole subtree). This is the static, per-leaf mask of
  :func:`optax.masked`, and masking is delegated to it, with no extra
  operations;
* Python numbers ``m >= 0``: per-leaf multipliers of ``lambda`` (the leaf is
  decayed with ``m*lambda``; ``True`` is 1, ``False`` is 0), as big_vision's
  ``wd_mults``; :func:`weight_decay_multipliers` builds them from rules; or
* on a flat buffer, the :class:`SegmentMultipliers` that
  ``flat_layout(...).mask`` returns for a mask with multipliers: one constant
  multiplier per segment of the buffer; or
* boolean arrays (NumPy or JAX, or tracers when a callable mask builds them
  inside ``jit``) with exactly the shape of their param leaf, ``True`` meaning
  "decay this element". The decay is then computed for the whole leaf and
  selected per element with ``jnp.where``. This is what lets the flat buffers
  of :func:`optax_decay.flat_layout` carry decayed and undecayed params in one
  array.

A callable mask is always evaluated on the params (at ``init`` and at every
``update``), never on the updates, so a mask that looks at values, such as
``lambda p: jax.tree.map(lambda x: x != 0, p)``, means the same in every
transform. (:func:`optax.masked` itself evaluates it on the updates.) This
module adds the checks and the usual mask.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_decay._checks import is_none

MASK_STRUCTURE_MSG = (
    "`mask` does not match the structure of the params.\n"
    "  mask:   {mask}\n  params: {params}\n"
    "Build the mask from the params themselves, e.g. "
    "`optax_decay.weight_decay_mask` or `jax.tree.map(lambda p: p.ndim >= 2, params)`, "
    "or pass that callable as `mask`."
)

MASK_LEAF_MSG = (
    "`mask` leaves must be Python bools (True: decay this leaf), numbers >= 0 (multipliers "
    "of weight_decay for the leaf) or boolean arrays with "
    "the shape of their param leaf (True: decay this element), got {leaf} of type {kind}. "
    "Build a per-leaf mask with Python comparisons such as `p.ndim >= 2`, and a "
    "per-element one as a bool array, e.g. `p != 0`; convert a 0/1 array with "
    "`.astype(bool)`."
)

MASK_SHAPE_MSG = (
    "`mask` leaf {path} is a bool array of shape {mask_shape}, but the param leaf "
    "there has shape {param_shape}. A per-element mask must have exactly the shape of "
    "its param leaf (it is not broadcast): build it from the param, e.g. "
    "`jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)`, or use a Python bool "
    "for the whole leaf."
)

MASK_PREFIX_MSG = (
    "`mask` leaf {path} is a bool array, but the params there are {params}, not one "
    "array leaf. Only Python bools are broadcast over a subtree of the params; put a "
    "bool array at each param leaf, or use a Python bool for the subtree."
)

MASK_NONE_MSG = (
    "The callable `mask` returned None for the params (a missing `return`?). None "
    "as a mask would decay nothing here, while `mask=None` means decay everything: "
    "return a pytree of bools with the params' structure."
)

MASK_SCALAR_MSG = (
    "`mask` is the single value {value} for the whole params tree. This is what "
    "`optax.inject_hyperparams` makes of a callable mask, which it evaluates as a "
    'schedule of the step count: pass `static_args="mask"`, e.g. '
    '`optax.inject_hyperparams(optax_decay.adamw, static_args="mask")(...)`. To switch '
    "the decay off, pass `weight_decay=0`; to decay every leaf, pass `mask=None`."
)

STEP_COUNT_MSG = (
    "`{name}` was called on {what}, not on a params pytree. `optax.inject_hyperparams` "
    "calls every callable hyperparameter with the step count, which would decay no leaf: "
    'pass `static_args="mask"`, e.g. '
    '`optax.inject_hyperparams(optax_decay.adamw, static_args="mask")(..., mask={name})`.'
)

MULTIPLIER_MSG = (
    "`mask` leaf {path} is {value!r}: a number in a mask multiplies `weight_decay` for its "
    "leaf and must be finite and >= 0 (True is 1, False is 0)."
)

MaskOrFn = Any | Callable[[Any], Any] | None


def check_not_step_count(name: str, params: Any) -> None:
    """Raises if a mask function gets a bare integer (a step count), not params."""
    if isinstance(params, (int, np.integer)) and not isinstance(params, bool):
        raise TypeError(STEP_COUNT_MSG.format(name=name, what=f"the integer {params!r}"))
    if hasattr(params, "dtype") and hasattr(params, "shape") and params.shape == ():
        if jnp.issubdtype(params.dtype, jnp.integer):
            raise TypeError(STEP_COUNT_MSG.format(name=name, what="a 0-d integer array"))


# `jnp.arange` counts in int32 unless x64 is enabled: from 2**31 elements on it wraps.
IOTA_LIMIT = 2**31


def prefix_mask(size: int, end: int, like: Any) -> jax.Array:
    """``arange(size) < end`` without an index that overflows int32, sharded like ``like``.

    On a mesh with Explicit axes the sharding is part of an array's type, and
    ``jnp.where`` rejects a mask typed replicated there (as one built under
    ``jax.set_mesh`` is) for a sharded buffer: such a mask takes the buffer's sharding,
    each device computing its own part (no communication).
    """
    if size < IOTA_LIMIT:
        mask = jnp.arange(size) < end
    else:
        mask = jnp.concatenate([jnp.ones(end, bool), jnp.zeros(size - end, bool)])
    if isinstance(like, jax.Array):  # tracers too; a NumPy buffer has no typed sharding
        sharding = jax.typeof(like).sharding
        if sharding.mesh.explicit_axes and jax.typeof(mask).sharding.mesh.explicit_axes:
            mask = jax.sharding.reshard(mask, sharding)
    return mask


@dataclasses.dataclass(frozen=True)
class SegmentMultipliers:
    """Per-element multipliers of ``lambda`` on a flat buffer, one constant per segment.

    ``values[k]`` on the elements ``[ends[k-1], ends[k])`` (from 0 for ``k = 0``),
    and 0 (no decay) from ``ends[-1]`` to ``size``. :func:`optax_decay.flat_layout`
    groups the leaves by multiplier so that each multiplier is one segment, and its
    ``layout.mask`` returns one of these per buffer. A static mask leaf: no float
    array is built, the transforms compute their update once per segment with a
    scalar rate and select per element (:meth:`select`).
    """

    size: int
    ends: tuple[int, ...]
    values: tuple[float, ...]

    def select(self, like: Any, branch: Callable[[float], Any], default: Any) -> Any:
        """``branch(values[k])`` on segment ``k``, ``default`` after the last one.

        Selects between per-element values with compares of an iota (no multiplier
        array): with a constant step, a multiplier array would be loop invariant, and
        XLA would hoist it out of a training loop and read it back at every step.
        """
        out = default
        for end, value in zip(reversed(self.ends), reversed(self.values), strict=True):
            out = jnp.where(prefix_mask(self.size, end, like), branch(value), out)
        return out


def _is_static(leaf: Any) -> bool:
    return isinstance(leaf, (bool, np.bool_, SegmentMultipliers)) or is_multiplier(leaf)


def is_multiplier(leaf: Any) -> bool:
    """True for a per-leaf multiplier: a Python or NumPy number that is not a bool."""
    return isinstance(leaf, (int, float, np.integer, np.floating)) and not isinstance(
        leaf, (bool, np.bool_)
    )


def _static_value(m: Any, where: str) -> bool | float:
    """A static mask leaf as True/False, or as a float multiplier other than 0 and 1."""
    if not is_multiplier(m):
        return bool(m)
    value = float(m)
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(MULTIPLIER_MSG.format(path=where, value=m))
    return value if value not in (0.0, 1.0) else value == 1.0


def is_array_mask(leaf: Any) -> bool:
    """True for a per-element (boolean array) mask leaf, False for a Python bool."""
    return not _is_static(leaf) and hasattr(leaf, "dtype") and hasattr(leaf, "shape")


def _describe(leaf: Any) -> str:
    if hasattr(leaf, "dtype") and hasattr(leaf, "shape"):
        return f"an array of shape {tuple(leaf.shape)} and dtype {leaf.dtype}"
    return repr(leaf)


def _check_leaf(leaf: Any) -> None:
    if _is_static(leaf):
        return
    if is_array_mask(leaf) and jnp.issubdtype(leaf.dtype, jnp.bool_):
        return
    raise TypeError(MASK_LEAF_MSG.format(leaf=_describe(leaf), kind=type(leaf).__name__))


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def resolve_mask(mask: MaskOrFn, params: Any) -> Any:
    """The full mask for ``params``: a tree with the params' structure.

    Evaluates a callable mask, broadcasts each Python-bool leaf of a prefix
    mask to every leaf below it and checks structure and leaf types, raising
    a clear error otherwise. Boolean array leaves are returned as they are,
    after checking that each sits at a param leaf of the same shape.
    """
    tree = mask(params) if callable(mask) else mask
    if tree is None:
        raise TypeError(MASK_NONE_MSG)
    whole_params_is_scalar = (
        jax.tree_util.treedef_is_leaf(jax.tree.structure(params)) and _shape(params) == ()
    )
    if (tree is False or tree is np.False_) or (
        is_array_mask(tree) and tree.shape == () and not whole_params_is_scalar
    ):
        raise ValueError(MASK_SCALAR_MSG.format(value=_describe(tree)))
    for leaf in jax.tree.leaves(tree):
        _check_leaf(leaf)

    def broadcast(path, m, sub):
        where = jax.tree_util.keystr(path) or "(root)"
        if isinstance(m, SegmentMultipliers):
            if _shape(sub) != (m.size,):
                raise ValueError(
                    MASK_SHAPE_MSG.format(path=where, mask_shape=(m.size,), param_shape=_shape(sub))
                )
            return m
        if not is_array_mask(m):
            value = _static_value(m, where)
            return jax.tree.map(lambda _: value, sub, is_leaf=is_none)
        if sub is None or not jax.tree_util.treedef_is_leaf(jax.tree.structure(sub)):
            raise ValueError(MASK_PREFIX_MSG.format(path=where, params=jax.tree.structure(sub)))
        if tuple(m.shape) != _shape(sub):
            raise ValueError(
                MASK_SHAPE_MSG.format(
                    path=where, mask_shape=tuple(m.shape), param_shape=_shape(sub)
                )
            )
        return m

    try:
        jax.tree.map(lambda m, sub: None, tree, params, is_leaf=is_none)
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(
            MASK_STRUCTURE_MSG.format(
                mask=jax.tree.structure(tree), params=jax.tree.structure(params)
            )
        ) from err
    return jax.tree_util.tree_map_with_path(broadcast, tree, params, is_leaf=is_none)


def _static_part(full_mask: Any) -> Any:
    """The resolved mask with each array leaf and multiplier replaced by True (run ``inner``)."""
    return jax.tree.map(lambda m: True if is_array_mask(m) or has_multipliers(m) else m, full_mask)


def has_multipliers(m: Any) -> bool:
    """True for a mask leaf that scales ``lambda``: a number, or a flat buffer's segments."""
    return is_multiplier(m) or isinstance(m, SegmentMultipliers)


def max_multiplier(full_mask: Any) -> float:
    """The largest multiplier of a resolved mask (1 where it has only bools and arrays)."""
    values = [1.0]
    for m in jax.tree.leaves(full_mask):
        values += m.values if isinstance(m, SegmentMultipliers) else [m] if is_multiplier(m) else []
    return max(values)


def _has_array_leaf(tree: Any) -> bool:
    return any(is_array_mask(leaf) for leaf in jax.tree.leaves(tree))


def masked(
    inner: optax.GradientTransformationExtraArgs,
    mask: MaskOrFn,
    check_multiplier: Callable[[float], None] | None = None,
) -> optax.GradientTransformationExtraArgs:
    """``inner`` applied where ``mask`` is True: :func:`optax.masked`, with the mask checked.

    The mask is resolved on the params, at ``init`` and at every ``update``
    (:func:`optax.masked` itself evaluates a callable mask on the updates).
    Its Python-bool part selects leaves exactly as :func:`optax.masked` does,
    with no extra operations. A boolean array leaf runs ``inner`` on its whole
    param leaf, as a ``True`` leaf would, and keeps ``inner``'s update where
    the array is True and the incoming update elsewhere (``jnp.where``). A
    multiplier leaf (a number, or the :class:`SegmentMultipliers` of a flat buffer)
    runs ``inner`` too, which gets the resolved mask as the extra argument
    ``decay_multipliers`` (only when the mask has multipliers) and scales its
    rate by it; ``check_multiplier`` is called with the largest
    multiplier at ``init`` and ``update``. The
    state is that of :func:`optax.masked` with ``True`` at those leaves, so it
    does not depend on the kind of mask. Running ``inner`` on the masked-out
    elements too is correct because every ``inner`` this package masks
    (:func:`add_l2_to_grad`, :func:`decoupled_decay`, :func:`prox_l2`) keeps
    no per-element state.

    ``inner`` checks the params itself, so ``update`` requires them before it
    resolves the mask. ``mask=None`` returns ``inner``.
    """
    if mask is None:
        return inner

    def resolve(params):
        full = resolve_mask(mask, params)
        if check_multiplier is not None:
            check_multiplier(max_multiplier(full))
        return full

    def init_fn(params):
        return optax.masked(inner, _static_part(resolve(params))).init(params)

    def update_fn(updates, state, params=None, **extra_args):
        if updates is None or params is None:  # inner returns None, or says params are missing
            return inner.update(updates, state, params, **extra_args)
        full = resolve(params)
        if any(has_multipliers(m) for m in jax.tree.leaves(full)):
            extra_args = {**extra_args, "decay_multipliers": full}
        new, state = optax.masked(inner, _static_part(full)).update(
            updates, state, params, **extra_args
        )
        if _has_array_leaf(full):
            new = jax.tree.map(
                # On a mesh with Explicit axes the sharding is part of the type: an array
                # mask typed there takes its leaf's, as jnp.where requires.
                lambda m, n, u: (
                    jnp.where(
                        jax.sharding.reshard(m, jax.typeof(u).sharding)
                        if jax.typeof(m).sharding.mesh.explicit_axes
                        and jax.typeof(u).sharding.mesh.explicit_axes
                        else m,
                        n,
                        u,
                    )
                    if is_array_mask(m)
                    else n
                ),
                full,
                new,
                updates,
            )
        return new, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


LEAF_MASK_MSG = (
    "`{name}` acts on each leaf as a whole ({what_for}), so its `mask` leaves must be "
    "Python bools (True: the leaf takes part), got {what} at {path}. A per-element mask "
    "or a multiplier of weight_decay has no meaning there: split the leaf, or use True/False."
)


def masked_per_leaf(
    name: str, inner: optax.GradientTransformationExtraArgs, mask: MaskOrFn, what_for: str
) -> optax.GradientTransformationExtraArgs:
    """:func:`masked` for a transform of whole leaves (a norm, a bound): bool leaves only.

    Array leaves and multipliers raise a ValueError naming ``name`` and the leaf, at
    ``init`` and at every ``update`` (a callable mask is evaluated on the params).
    """
    if mask is None:
        return inner
    wrapped = masked(inner, mask)

    def check(params):
        for path, m in jax.tree_util.tree_flatten_with_path(resolve_mask(mask, params))[0]:
            if is_array_mask(m) or has_multipliers(m):  # a flat buffer's segments too
                what = f"an array of shape {tuple(m.shape)}" if is_array_mask(m) else repr(m)
                where = jax.tree_util.keystr(path) or "(root)"
                raise ValueError(
                    LEAF_MASK_MSG.format(name=name, what_for=what_for, what=what, path=where)
                )

    def init_fn(params):
        check(params)
        return wrapped.init(params)

    def update_fn(updates, state, params=None, **extra_args):
        if updates is not None and params is not None:
            check(params)
        return wrapped.update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def weight_decay_mask(
    params: Any, *, min_ndim: int = 2, exclude: str | Iterable[str] = ("bias", "scale")
) -> Any:
    """The usual decay mask: decay matrices and kernels, skip biases and norm scales.

    A leaf is decayed when it has at least ``min_ndim`` dimensions and no key on
    its path is in ``exclude``. Works on plain dicts, Flax Linen ``params`` and
    Flax NNX ``State`` (it maps over the same pytree the optimizer sees), and
    can be passed as a callable: ``mask=optax_decay.weight_decay_mask``.

    Embedding tables are matrices, so they **are decayed** by default. To keep
    them out, name them: ``functools.partial(weight_decay_mask,
    exclude=("bias", "scale", "embedding"))`` (Flax names the table of
    ``nnx.Embed``/``linen.Embed`` ``embedding``). ``exclude`` replaces the
    default names, so list ``"bias"`` and ``"scale"`` again.

    Under :func:`optax.inject_hyperparams`, pass ``static_args="mask"``: it
    would otherwise call this function on the step count, which raises.

    Args:
      params: the parameter pytree.
      min_ndim: smallest rank that is decayed; 2 skips vectors and scalars.
      exclude: path keys that are never decayed (Flax names biases ``bias`` and
        norm scales ``scale``): one name as a string, or an iterable of names.

    Returns:
      A pytree of bools with the structure of ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> weight_decay_mask({"dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)}})
      {'dense': {'bias': False, 'kernel': True}}
      >>> weight_decay_mask({"embed": {"embedding": jnp.ones((10, 4))}}, exclude="embedding")
      {'embed': {'embedding': False}}
    """
    check_not_step_count("weight_decay_mask", params)
    excluded = frozenset([exclude] if isinstance(exclude, str) else exclude)

    def decide(path, leaf):
        if leaf is None:
            return None
        names = {_key_name(k) for k in path}
        return bool(np.ndim(leaf) >= min_ndim and not names & excluded)

    return jax.tree_util.tree_map_with_path(decide, params, is_leaf=is_none)


def weight_decay_multipliers(
    rules: Sequence[tuple[str, float]], default: float = 0.0
) -> Callable[[Any], Any]:
    """A callable mask of per-leaf multipliers of ``lambda``, from ``(regex, multiplier)`` rules.

    Each leaf's path keys are joined by ``/`` (e.g. ``"layers/0/attn/kernel"``)
    and matched with :func:`re.fullmatch` against the rules in order; the first
    rule that matches gives the leaf's multiplier, and a leaf that no rule
    matches gets ``default``. This is big_vision's ``wd_mults``: e.g.
    ``[(".*head/kernel", 100.0), (".*/kernel", 1.0)]`` decays the head 100x
    harder, the other kernels normally and nothing else. Works on plain dicts,
    Flax Linen params and Flax NNX ``State`` (an NNX ``Variable``'s ``.value``
    is not part of the name). Pass it as ``mask=``; under
    :func:`optax.inject_hyperparams` with ``static_args="mask"``.

    Args:
      rules: ``(regex, multiplier)`` pairs, ``multiplier >= 0`` (``True`` is 1,
        ``False`` 0).
      default: the multiplier of a leaf that no rule matches; 0 leaves it undecayed.

    Returns:
      A callable ``params -> pytree`` of multipliers with the params' structure.

    Example:
      >>> import jax.numpy as jnp
      >>> mults = weight_decay_multipliers([(".*head/kernel", 10.0), (".*kernel", 1.0)])
      >>> mults({"body": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
      ...        "head": {"kernel": jnp.ones((2, 1))}})
      {'body': {'bias': 0.0, 'kernel': 1.0}, 'head': {'kernel': 10.0}}
    """
    compiled = []
    for rule in rules:
        if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str)):
            raise TypeError(f"`rules` must be (regex, multiplier) pairs, got {rule!r}.")
        pattern, mult = rule
        _static_value(mult, f"of the rule {pattern!r}")
        compiled.append((re.compile(pattern), mult))
    _static_value(default, "`default`")

    def multipliers(params: Any) -> Any:
        check_not_step_count("weight_decay_multipliers", params)

        def decide(path, leaf):
            if leaf is None:
                return None
            keys = [_key_name(k) for k in path]
            if isinstance(path[-1], jax.tree_util.GetAttrKey) and keys[-1] == "value":
                keys.pop()  # an NNX Variable's array: "dense/kernel", not "dense/kernel/value"
            name = "/".join(keys)
            return next((m for regex, m in compiled if regex.fullmatch(name)), default)

        return jax.tree_util.tree_map_with_path(decide, params, is_leaf=is_none)

    return multipliers
