"""Norm projection: each leaf, or each slice of it, back onto a sphere after the step."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_decay._checks import is_none, require_params
from optax_decay._masks import MaskOrFn, masked_per_leaf

RADIUS_MSG = (
    '`radius` must be "init" (the norms seen by `init`), a number > 0, or a pytree with '
    "the params' structure (or a prefix of it) of numbers > 0 or arrays of each slice's "
    "norm shape; got {what}."
)

RADIUS_SHAPE_MSG = (
    "`radius` leaf {path} has shape {got}; with axis={axis} the norms of param leaf "
    "{path} (shape {param}) have shape {want}. Pass a scalar, or an array of that shape."
)

AXIS_MSG = (
    "`axis`={axis!r} does not fit param leaf {path} of shape {shape}: pass None (the "
    "whole leaf) or an int or tuple of ints in [-{ndim}, {ndim}), the axes each norm is "
    "taken over (e.g. axis=1 of an (vocab, dim) embedding: one norm per row)."
)


class ProjectToNormState(NamedTuple):
    """State of :func:`project_to_norm` with ``radius="init"``; otherwise ``EmptyState``."""

    radius: Any  # per projected leaf: its norms at init, float32 or wider, norm shape; else None


def _axes(axis: Any, ndim: int) -> tuple[int, ...] | None:
    """The axes the norm is taken over (normalized), or None where ``axis`` does not fit."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if not all(isinstance(a, (int, np.integer)) and -ndim <= a < ndim for a in axes):
        return None
    out = tuple(sorted({int(a) % ndim for a in axes}))
    return out if len(out) == len(axes) else None


def _norm(z: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """The L2 norm over ``axes`` (kept, size 1), in float32 at least."""
    wide = jnp.promote_types(z.dtype, jnp.float32)
    return jnp.sqrt(jnp.sum(jnp.square(z.astype(wide)), axis=axes, keepdims=True))


def project_to_norm(
    radius: Any = "init", axis: int | tuple[int, ...] | None = None, mask: MaskOrFn = None
) -> optax.GradientTransformationExtraArgs:
    r"""Projects each leaf, or each slice of it, onto the sphere of norm ``radius`` after the step.

    .. math::

      z = w + u, \qquad w_{t+1} = r\,\frac{z}{\|z\|_2}, \qquad
      u \leftarrow w_{t+1} - w_t

    The norm ``||z||`` is taken over the whole leaf (``axis=None``) or over
    ``axis`` (an int or a tuple of ints), one norm per slice: ``axis=-1`` of an
    ``(vocab, dim)`` embedding normalizes each row, as nGPT does (Loshchilov et
    al. 2024); ``axis=0`` of a Dense kernel ``(in, out)`` normalizes each output
    unit's weights. Place it last in a chain, after the step (and any decay):
    the weights then never leave the sphere, the "hyperball" training of
    recent Muon and Adam variants, where no weight decay is needed.

    ``radius="init"`` keeps the norms of the params seen by ``init`` in the
    state (one number per projected leaf or slice, in float32 or wider); a
    number or a pytree (the params' structure or a prefix of it; each leaf a
    number or an array of the norms' shape, the param's shape with the reduced
    axes of size 1) sets them. A slice with ``||z|| = 0`` has no direction and
    stays as it is (finite, not NaN). The norm is computed in float32 at least,
    so bfloat16 params stay on the sphere to their own round-off. On a flat
    buffer (:func:`flat_layout`) a "leaf" is a whole buffer, so ``axis=None``
    projects all params of a dtype together: use the tree path for per-leaf
    norms (this cannot be checked here, a buffer is a plain array).

    Args:
      radius: ``r > 0``: ``"init"``, a number, or a pytree as above.
      axis: the axes of each norm; ``None`` for the whole leaf.
      mask: which leaves to project: a pytree of Python bools (or a callable
        ``params -> pytree``), e.g. :func:`weight_decay_mask` for the kernels
        only; ``None`` projects every leaf.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax, optax_decay
      >>> tx = optax.chain(optax.sgd(0.5), optax_decay.project_to_norm())
      >>> w = jnp.array([3.0, 4.0]); g = jnp.array([2.0, -2.0])
      >>> u, _ = tx.update(g, tx.init(w), w)
      >>> w + u  # z = [2, 5], rescaled to the initial norm 5
      Array([1.8569534, 4.6423836], dtype=float32)

    References:
      Loshchilov, Hsieh, Sun & Ginsburg, *nGPT: Normalized Transformer with
      Representation Learning on the Hypersphere*, 2024,
      https://arxiv.org/abs/2410.01131

    See also: :func:`equilibrium_angular_update` (the angular step that decay
    would settle at instead), :func:`decoupled_decay`.
    """
    init_radius = isinstance(radius, str)
    if init_radius and radius != "init":
        raise ValueError(RADIUS_MSG.format(what=repr(radius)))
    if not init_radius:
        _check_radius_values(radius)

    def axes_of(path: Any, w: Any) -> tuple[int, ...]:
        axes = _axes(axis, np.ndim(w))
        if axes is None:
            where = jax.tree_util.keystr(path) or "(root)"
            raise ValueError(
                AXIS_MSG.format(axis=axis, path=where, shape=np.shape(w), ndim=np.ndim(w))
            )
        return axes

    def radii(params: Any) -> Any:
        """``radius`` as a tree with the params' structure, each leaf checked."""
        try:
            tree = jax.tree.broadcast(radius, params, is_leaf=is_none)
        except (ValueError, TypeError, KeyError) as err:
            what = f"a tree of structure {jax.tree.structure(radius)}"
            raise ValueError(RADIUS_MSG.format(what=what)) from err

        def check(path, r, w):
            if w is None:
                return None
            want = tuple(1 if i in axes_of(path, w) else n for i, n in enumerate(np.shape(w)))
            if np.shape(r) not in ((), want):
                where = jax.tree_util.keystr(path) or "(root)"
                raise ValueError(
                    RADIUS_SHAPE_MSG.format(
                        path=where, got=np.shape(r), axis=axis, param=np.shape(w), want=want
                    )
                )
            return r

        return jax.tree_util.tree_map_with_path(check, tree, params, is_leaf=is_none)

    def init_fn(params):
        def norms(path, w):
            return None if w is None else _norm(jnp.asarray(w), axes_of(path, w))

        stored = jax.tree_util.tree_map_with_path(norms, params, is_leaf=is_none)
        if init_radius:
            return ProjectToNormState(stored)
        radii(params)
        return optax.EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if updates is None:
            return None, state
        require_params("project_to_norm", updates, params)
        target = state.radius if init_radius else radii(params)

        def leaf(path, u, w, r):
            if u is None:
                return None
            u, w = jnp.asarray(u), jnp.asarray(w)
            z = w + u
            norm = _norm(z, axes_of(path, w))
            scale = jnp.asarray(r, norm.dtype) / jnp.where(norm > 0, norm, 1)
            # r*z/||z|| - w = scale*u + (scale - 1)*w, written without z: z is then only
            # read by the norm, which XLA fuses with its computation (one pass less).
            wide_u, wide_w = u.astype(norm.dtype), w.astype(norm.dtype)
            delta = scale * wide_u + (scale - 1) * wide_w
            return jnp.where(norm > 0, delta, wide_u).astype(u.dtype)

        updates = jax.tree_util.tree_map_with_path(leaf, updates, params, target, is_leaf=is_none)
        return updates, state

    inner = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return masked_per_leaf("project_to_norm", inner, mask, "a norm")


def _check_radius_values(radius: Any) -> None:
    for leaf in jax.tree.leaves(radius):
        if isinstance(leaf, jax.core.Tracer):
            continue
        value = np.asarray(leaf)
        if not (np.issubdtype(value.dtype, np.number) and np.all(np.isfinite(value))):
            raise ValueError(RADIUS_MSG.format(what=repr(leaf)))
        if not np.all(value > 0):
            raise ValueError(RADIUS_MSG.format(what=repr(leaf)))
