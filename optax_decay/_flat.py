"""Flat buffers: the params, and so the optimizer state, in one contiguous array per dtype.

Why. An optimizer on a pytree runs its elementwise math leaf by leaf: with
many small leaves, a step is thousands of small kernels (or, on CPU, loops),
each paying a launch and a pass over a few KB. On an H100, ``optax.adamw`` on
2000 leaves of 65,536 params takes 4.2-4.5x the time the memory traffic alone
needs (the roofline), against 0.96x for one flat buffer of the same 131M
params (``benchmarks/RESULTS.md``). :func:`flat_layout` packs a params pytree into one 1-D buffer per
dtype, a plain ``dict`` such as ``{"float32": array, "bfloat16": array}``, and
unpacks it again for the model. Every optimizer and transform of this package
then runs unchanged on the buffers, with one fused kernel per buffer, and
Adam's moments are flat buffers too.

Masks. A per-leaf mask (``weight_decay_mask`` skips biases and norm scales)
becomes per-element data on a flat buffer. The layout puts the decayed leaves
first in each buffer, so that each buffer's mask is a prefix:
``layout.mask(flat)`` is ``{dtype: jnp.arange(n) < n_decayed}``, an iota and a
compare that XLA fuses into the update, with no mask array in memory. Pass it
as ``mask=layout.mask`` to any optimizer of the package. The result equals the
tree path's, element for element (``tests/test_flat.py``).

Multipliers. A mask with per-leaf multipliers of ``lambda`` (numbers, as
:func:`weight_decay_multipliers` gives) groups the decayed leaves of each buffer
by multiplier, so that each multiplier is one segment of the buffer. Then
``layout.mask(flat)`` is ``{dtype: SegmentMultipliers}``: the segments' ends and
multipliers, static. The transforms compute their update once per segment with
a scalar rate and select per element by compares of an iota, so no float array
of multipliers is built or read.

Sharding. A buffer sharded over ``n`` devices (FSDP: ``NamedSharding(mesh,
P("x"))``) needs a length divisible by ``n``. ``flat_layout(params,
pad_to_multiple_of=n)`` rounds each buffer up with padding elements at its
end: ``ravel`` writes zeros there, ``unravel`` never reads them (so their
gradients are zero) and ``layout.mask`` is False on them, so they stay zero
under every optimizer of the package. (Adam's moments stay zero there too, and
its step is ``0 / D`` with ``D = sqrt(0 + eps_root) + eps``: keep ``eps`` or
``eps_root`` positive, as the default ``eps=1e-8`` is, or that step is NaN.)
Under a mesh with ``Explicit`` axes, where the sharding is part of an array's
type, ``layout.mask`` takes its buffer's sharding, and so does a bool-array
mask where it meets its param leaf; unravel gathered buffers there,
``layout.unravel(jax.sharding.reshard(flat, P()))``.

Usage, with a model whose loss takes the params pytree::

    layout = optax_decay.flat_layout(params, mask=optax_decay.weight_decay_mask)
    flat = layout.ravel(params)
    tx = optax_decay.adamw(1e-3, 1e-4, mask=layout.mask)
    opt_state = tx.init(flat)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(flat, opt_state, batch):
        # Differentiate with respect to the buffers: unravel is slices and reshapes.
        grads = jax.grad(lambda f: loss(layout.unravel(f), batch))(flat)
        updates, opt_state = tx.update(grads, opt_state, flat)
        return optax.apply_updates(flat, updates), opt_state

``layout.ravel(tree_grads)`` packs gradients taken with respect to the tree
instead (one more copy of the gradients). With Flax NNX, build the layout on
``nnx.split(model, nnx.Param)``'s state and merge ``layout.unravel(flat)``
back with the graph definition inside the loss.

Example:
  >>> import jax, jax.numpy as jnp, optax, optax_decay
  >>> params = {"dense": {"bias": jnp.ones(2), "kernel": jnp.ones((2, 2))}}
  >>> layout = optax_decay.flat_layout(params, mask=optax_decay.weight_decay_mask)
  >>> flat = layout.ravel(params)  # the kernel (decayed) first, then the bias
  >>> layout.mask(flat)
  {'float32': Array([ True,  True,  True,  True, False, False], dtype=bool)}
  >>> tx = optax_decay.sgdw(0.1, 0.5, mask=layout.mask)
  >>> grads = layout.ravel(jax.tree.map(jnp.zeros_like, params))
  >>> updates, _ = tx.update(grads, tx.init(flat), flat)
  >>> new = layout.unravel(optax.apply_updates(flat, updates))
  >>> new["dense"]["kernel"], new["dense"]["bias"]  # decayed by 1 - 0.5; the bias is not
  (Array([[0.5, 0.5], [0.5, 0.5]], dtype=float32), Array([1., 1.], dtype=float32))
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optax_decay._checks import is_none
from optax_decay._masks import (
    MaskOrFn,
    SegmentMultipliers,
    check_not_step_count,
    is_array_mask,
    prefix_mask,
    resolve_mask,
)

RAVEL_STRUCTURE_MSG = (
    "The tree passed to `FlatLayout.ravel` does not have the structure the layout "
    "was built with.\n  tree:   {got}\n  layout: {want}\n"
    "Pass a tree with the params' structure (the params, their gradients, a moment), "
    "or build a new layout with `optax_decay.flat_layout(params)`."
)

RAVEL_SHAPE_MSG = (
    "`FlatLayout.ravel`: leaf {path} has shape {got}, the layout has {want} there. "
    "Build a new layout with `optax_decay.flat_layout(params)` for params of other shapes."
)

RAVEL_DTYPE_MSG = (
    "`FlatLayout.ravel`: leaf {path} has dtype {got}; the layout's {buffer} buffer needs "
    "{want} there. ravel casts nothing: floating-point leaves must have the dtype of their "
    "params leaf, so that each buffer holds the dtype its key names (a tree of other "
    "dtypes, such as a per-element bool mask, is packed as it is, one dtype per buffer). "
    "Cast the tree to the params' dtypes first, e.g. gradients with "
    "`jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)`."
)

FLAT_KEYS_MSG = (
    "`FlatLayout.{method}` expects the dict of flat buffers made by `layout.ravel`, "
    "with keys {want} and 1-D buffers of sizes {sizes}; got {got}."
)

FLAT_MASK_MSG = (
    "`flat_layout` needs a per-leaf mask of Python bools (True: decay the leaf), as "
    "`optax_decay.weight_decay_mask` returns; leaf {path} of the mask is a bool array. "
    "The layout turns the per-leaf mask into a per-element one itself (`layout.mask`)."
)

FLAT_PAD_MSG = (
    "`flat_layout`: `pad_to_multiple_of` must be a positive int, such as the number of "
    "devices a buffer is sharded over, or None for no padding; got {got!r}."
)

FLAT_LEAF_MSG = (
    "`flat_layout`: params leaf {path} is {leaf!r}, not an array. Every leaf must have "
    "a `shape` and a `dtype` (a JAX or NumPy array, or `jax.ShapeDtypeStruct`)."
)


def _dtype_name(x: Any) -> str:
    return np.dtype(x.dtype if hasattr(x, "dtype") else jnp.result_type(x)).name


class _Buffer(NamedTuple):
    """One dtype's buffer: key, leaves in buffer order, their sizes, decayed prefix, padding."""

    name: str
    leaves: tuple[int, ...]  # indices into the flattened leaves, decayed leaves first
    sizes: tuple[int, ...]  # the number of elements of each of those leaves
    decayed: int
    padding: int = 0  # zeros after the last leaf
    # The decayed prefix as (multiplier of lambda, number of elements) runs, in order.
    segments: tuple[tuple[float, int], ...] = ()

    def multipliers(self) -> SegmentMultipliers:
        """The buffer's multipliers: one constant per segment, 0 after the decayed prefix."""
        ends = tuple(int(e) for e in np.cumsum([n for _, n in self.segments]))
        return SegmentMultipliers(self.size, ends, tuple(m for m, _ in self.segments))

    @property
    def size(self) -> int:
        """The length of the buffer, padding included."""
        return sum(self.sizes) + self.padding


@dataclasses.dataclass(frozen=True)
class FlatLayout:
    """How a params pytree maps to one 1-D buffer per dtype; made by :func:`flat_layout`.

    Immutable and hashable, so it can be a static argument of ``jax.jit``.
    Leaf ``i`` (in ``jax.tree.leaves`` order) has shape ``shapes[i]``; each
    buffer lists its leaves in buffer order, decayed leaves first, then its
    padding (zeros, with ``pad_to_multiple_of``).
    """

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    buffers: tuple[_Buffer, ...]
    has_mask: bool

    @property
    def size(self) -> int:
        """The number of elements of all buffers together, padding included."""
        return sum(b.size for b in self.buffers)

    @property
    def sizes(self) -> dict[str, int]:
        """The length of each buffer, padding included, by dtype name."""
        return {b.name: b.size for b in self.buffers}

    @property
    def num_decayed(self) -> dict[str, int]:
        """The number of decayed elements of each buffer (its prefix), by dtype name."""
        return {b.name: b.decayed for b in self.buffers}

    @property
    def num_padding(self) -> dict[str, int]:
        """The number of padding elements at the end of each buffer, by dtype name."""
        return {b.name: b.padding for b in self.buffers}

    @property
    def has_multipliers(self) -> bool:
        """True when the mask gave some leaf a multiplier of ``lambda`` other than 0 and 1."""
        return any(m != 1.0 for b in self.buffers for m, _ in b.segments)

    @property
    def mask(self) -> Callable[[Any], dict[str, Any]] | None:
        """The per-element mask to pass as ``mask=``: ``flat -> {dtype: bool array}``.

        True on the elements of the decayed leaves, False on the others and on the
        padding. ``None`` (decay everything) when the layout was built without a
        mask and has no padding; built without a mask but padded, the layout's mask
        is True on every param element and False on the padding only. A layout
        built with multipliers (``has_multipliers``) gives one
        :class:`~optax_decay._masks.SegmentMultipliers` per buffer instead: the
        multiplier of each segment of leaves, 0 on the rest and on the padding.
        """
        needed = self.has_mask or any(b.padding for b in self.buffers)
        return _ElementMask(self) if needed else None

    def element_mask(self, flat: Mapping[str, Any]) -> dict[str, jax.Array]:
        """``{dtype: jnp.arange(n) < n_decayed}``: True on each buffer's decayed prefix.

        Built from an iota, not read from memory: under ``jit`` XLA fuses the
        compare into the update that uses it. (A buffer of ``2**31`` elements or
        more, past int32 indices, gets two constant blocks instead.) On a mesh
        with Explicit axes (``jax.set_mesh``) each mask takes the sharding of its
        buffer, as ``jnp.where`` requires there.
        """
        self._check_flat("mask", flat)
        return {b.name: prefix_mask(b.size, b.decayed, flat[b.name]) for b in self.buffers}

    def ravel(self, tree: Any) -> dict[str, jax.Array]:
        """Packs a tree with the params' structure into ``{dtype name: 1-D buffer}``.

        Works on the params, their gradients or any tree of the same structure
        and shapes, under ``jit`` too. Nothing is cast. A floating-point leaf
        must have the dtype of the params leaf there, the dtype its buffer is
        named after: float32 gradients of bfloat16 params raise a ValueError
        that names the leaf (cast them with ``jax.tree.map(lambda g, p:
        g.astype(p.dtype), grads, params)``). A tree of other dtypes, such as a
        per-element bool mask, is packed as it is, all leaves of a buffer
        sharing one dtype. The padding of each buffer is filled with zeros.
        """
        leaves, treedef = jax.tree.flatten(tree)
        if treedef != self.treedef:
            raise ValueError(RAVEL_STRUCTURE_MSG.format(got=treedef, want=self.treedef))
        for i, (leaf, shape) in enumerate(zip(leaves, self.shapes, strict=True)):
            if tuple(np.shape(leaf)) != shape:
                raise ValueError(
                    RAVEL_SHAPE_MSG.format(path=self._path(i), got=np.shape(leaf), want=shape)
                )
        out = {}
        for b in self.buffers:
            dtypes = [_dtype_name(leaves[i]) for i in b.leaves]
            floats = any(jnp.issubdtype(d, jnp.floating) for d in dtypes)
            want = b.name if floats else dtypes[0]
            for i, got in zip(b.leaves, dtypes, strict=True):
                if got != want:
                    path = self._path(i)
                    raise ValueError(
                        RAVEL_DTYPE_MSG.format(path=path, got=got, buffer=b.name, want=want)
                    )
            parts = [jnp.reshape(leaves[i], (-1,)) for i in b.leaves]
            if b.padding:
                parts.append(jnp.zeros(b.padding, parts[0].dtype))
            out[b.name] = jnp.concatenate(parts)
        return out

    def unravel(self, flat: Mapping[str, Any]) -> Any:
        """The pytree of ``flat``: the params' structure and shapes, by slices and reshapes.

        Each leaf takes the dtype of its buffer (the params' own for buffers made by
        :meth:`ravel` from the params). The padding is never read, so gradients
        taken through ``unravel`` are zero there. Differentiable, and cheap under
        ``jit``. On a mesh with Explicit axes JAX does not split a sharded axis
        into pieces the devices do not divide: gather the buffers first, as FSDP
        does anyway, with ``layout.unravel(jax.sharding.reshard(flat, P()))``
        (the gradients of ``flat`` then come back sharded).
        """
        self._check_flat("unravel", flat)
        return _unravel(self, flat)

    def _check_flat(self, method: str, flat: Any) -> None:
        names = [b.name for b in self.buffers]
        ok = isinstance(flat, Mapping) and sorted(flat) == sorted(names)
        ok = ok and all(tuple(np.shape(flat[b.name])) == (b.size,) for b in self.buffers)
        if not ok:
            got = (
                {k: tuple(np.shape(v)) for k, v in flat.items()}
                if isinstance(flat, Mapping)
                else type(flat).__name__
            )
            raise ValueError(
                FLAT_KEYS_MSG.format(method=method, want=names, sizes=self.sizes, got=got)
            )

    def _path(self, i: int) -> str:
        dummy = jax.tree.unflatten(self.treedef, list(range(len(self.shapes))))
        path = jax.tree_util.tree_flatten_with_path(dummy)[0][i][0]
        return jax.tree_util.keystr(path) or "(root)"

    def __repr__(self) -> str:
        def describe(b: _Buffer) -> str:
            padding = f", {b.padding} padding" if b.padding else ""
            if self.has_multipliers:
                runs = " + ".join(f"{n} x{m:g}" for m, n in b.segments) or "0"
                return f"{b.name}: {b.size} ({runs} decayed{padding})"
            return f"{b.name}: {b.size} ({b.decayed} decayed{padding})"

        parts = ", ".join(describe(b) for b in self.buffers)
        return f"FlatLayout({len(self.shapes)} leaves; {parts or 'empty'})"


def _unravel(layout: FlatLayout, flat: Mapping[str, jax.Array]) -> Any:
    # One split per buffer, not a slice per leaf: the transpose of a split is one
    # concatenation, while each slice would transpose to a pad to the buffer's full
    # size, summed by XLA leaf by leaf (on the CPU that made a train step on flat
    # buffers 2x slower than on the tree).
    leaves: list[Any] = [None] * len(layout.shapes)
    for b in layout.buffers:
        # The padding is one more piece, split off and dropped: its gradient is zero.
        sizes = (*b.sizes, b.padding) if b.padding else b.sizes
        pieces = jax.lax.split(flat[b.name], sizes)[: len(b.leaves)]
        for i, piece in zip(b.leaves, pieces, strict=True):
            leaves[i] = piece.reshape(layout.shapes[i])
    return jax.tree.unflatten(layout.treedef, leaves)


@dataclasses.dataclass(frozen=True)
class _ElementMask:
    """``layout.mask``: a callable equal (and hashing equal) for equal layouts.

    A bound method would compare its layout by identity, so two equal layouts would
    give masks that differ as static arguments of ``jit`` or ``inject_hyperparams``.
    """

    layout: FlatLayout

    def __call__(self, flat: Mapping[str, Any]) -> dict[str, Any]:
        check_not_step_count("layout.mask", flat)
        if self.layout.has_multipliers:
            self.layout._check_flat("mask", flat)
            return {b.name: b.multipliers() for b in self.layout.buffers}
        return self.layout.element_mask(flat)

    def __repr__(self) -> str:
        return f"{self.layout!r}.mask"


def flat_layout(
    params: Any, mask: MaskOrFn = None, *, pad_to_multiple_of: int | None = None
) -> FlatLayout:
    """The flat-buffer layout of ``params``: one contiguous 1-D buffer per dtype.

    Within each buffer the leaves decayed by ``mask`` come first, in tree
    order, then the others, so that ``layout.mask`` is a prefix per buffer.
    ``None`` leaves of ``params`` hold no elements and come back as ``None``.

    With ``pad_to_multiple_of=n`` each buffer's length is rounded up to a
    multiple of ``n`` (the number of devices it is sharded over) by padding
    elements after its last leaf. ``ravel`` writes zeros there, ``unravel``
    never reads them and ``layout.mask`` is False on them (even for a layout
    without a mask), so they stay zero under every optimizer of the package.

    Args:
      params: the params pytree (arrays, or ``jax.ShapeDtypeStruct`` leaves).
      mask: which leaves to decay: a pytree of Python bools (or numbers ``>= 0``,
        multipliers of ``lambda``) with the params' structure (or a prefix of
        it), or a callable ``params -> pytree`` such as :func:`weight_decay_mask`
        or :func:`weight_decay_multipliers`; ``None`` decays every leaf and makes
        ``layout.mask`` ``None`` (unless there is padding).
      pad_to_multiple_of: a positive int ``n``: pad each buffer to a multiple
        of ``n`` elements; ``None`` (the default) pads nothing.

    Returns:
      A :class:`FlatLayout` with ``ravel``, ``unravel``, ``mask``, ``size``
      and ``sizes`` (buffer lengths, padding included).

    Example:
      >>> import jax.numpy as jnp, optax_decay
      >>> params = {"b": jnp.zeros(3), "w": jnp.zeros((2, 3)), "h": jnp.zeros(2, jnp.bfloat16)}
      >>> optax_decay.flat_layout(params, mask=optax_decay.weight_decay_mask)
      FlatLayout(3 leaves; float32: 9 (6 decayed), bfloat16: 2 (0 decayed))
      >>> optax_decay.flat_layout(params, mask=optax_decay.weight_decay_mask, pad_to_multiple_of=8)
      FlatLayout(3 leaves; float32: 16 (6 decayed, 7 padding), bfloat16: 8 (0 decayed, 6 padding))
    """
    multiple = pad_to_multiple_of
    if multiple is not None and (
        isinstance(multiple, bool) or not isinstance(multiple, numbers.Integral) or multiple < 1
    ):
        raise ValueError(FLAT_PAD_MSG.format(got=multiple))
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    for path, leaf in paths_leaves:
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
            raise TypeError(
                FLAT_LEAF_MSG.format(path=jax.tree_util.keystr(path) or "(root)", leaf=leaf)
            )
    leaves = [leaf for _, leaf in paths_leaves]
    if mask is None:
        decay = [True] * len(leaves)
    else:
        full = resolve_mask(mask, params)
        # resolve_mask puts a bool where params have None; keep the leaves' entries only.
        decay = [
            m
            for m, p in zip(
                jax.tree.leaves(full, is_leaf=is_none),
                jax.tree.leaves(params, is_leaf=is_none),
                strict=True,
            )
            if p is not None
        ]
        for (path, _), m in zip(paths_leaves, decay, strict=True):
            where = jax.tree_util.keystr(path) or "(root)"
            if is_array_mask(m):
                raise TypeError(FLAT_MASK_MSG.format(path=where))
    names = [_dtype_name(leaf) for leaf in leaves]
    shapes = tuple(tuple(int(d) for d in leaf.shape) for leaf in leaves)
    sizes = [int(np.prod(shape, dtype=np.int64)) for shape in shapes]
    buffers = []
    for name in dict.fromkeys(names):  # dtypes in order of first appearance
        mine = [i for i, n in enumerate(names) if n == name]
        # The decayed leaves grouped by multiplier (True is 1), in order of first
        # appearance, so that each multiplier is one segment; then the others.
        mults = {i: float(decay[i]) for i in mine if decay[i]}
        segments = tuple(
            (m, sum(sizes[i] for i in mults if mults[i] == m))
            for m in dict.fromkeys(mults.values())
        )
        order = [i for m, _ in segments for i in mults if mults[i] == m]
        order += [i for i in mine if not decay[i]]
        decayed = sum(n for _, n in segments)
        padding = -sum(sizes[i] for i in mine) % multiple if multiple else 0
        buffers.append(
            _Buffer(
                name,
                tuple(order),
                tuple(sizes[i] for i in order),
                decayed,
                int(padding),
                segments,
            )
        )
    return FlatLayout(
        treedef=treedef,
        shapes=shapes,
        buffers=tuple(buffers),
        has_mask=mask is not None,
    )
