"""Shape and dtype checks at the public API boundaries, over chex, naming the argument.

chex's assertions (``chex.assert_rank``, ``assert_shape``, ``assert_type``,
``assert_trees_all_equal_structs``) say what was wrong but not which argument of which
function: ``Error in rank compatibility check: input 0 has rank 3 (shape (28, 28, 1)),
but expected 4.`` These helpers call them and re-raise a :class:`ValueError` (shape) or
:class:`TypeError` (dtype) whose message names the function, the argument, the
expected and the given shape or dtype, and what the argument should look like::

    client_update: x must have rank 4 (batch, H, W, C); got shape (28, 28, 1).

Every check reads only static shapes and dtypes, so inside ``jit`` it runs once at trace
time and costs nothing at run time; inside ``vmap`` it sees the per-example shapes (the
mapped axis removed), which is what the function itself sees. ``chex.disable_asserts()``
switches them off with chex's own.
"""

from __future__ import annotations

from typing import Any, Sequence

import chex
import jax
import numpy as np


def shape_of(value: Any) -> tuple[int, ...]:
    """The static shape of an array, tracer, ``jax.ShapeDtypeStruct`` or scalar."""
    shape = getattr(value, "shape", None)
    return tuple(shape) if shape is not None else tuple(np.shape(value))


def dtype_of(value: Any) -> Any:
    dtype = getattr(value, "dtype", None)
    return dtype if dtype is not None else np.asarray(value).dtype


def _layout(layout: str) -> str:
    return f" {layout}" if layout else ""


def _fmt_expected(expected: Sequence[int | None]) -> str:
    return "(" + ", ".join("*" if d is None else str(d) for d in expected) + \
        ("," if len(expected) == 1 else "") + ")"


def rank(value: Any, expected: int | set[int], *, name: str, where: str,
         layout: str = "") -> None:
    """``value`` has rank ``expected`` (an int or a set of ranks).

    Raises:
      ValueError: naming ``where``, ``name``, the expected rank (and ``layout``, e.g.
        ``"(batch, H, W, C)"``) and the given shape.
    """
    try:
        chex.assert_rank(value, expected)
    except AssertionError:
        ranks = expected if isinstance(expected, int) else \
            " or ".join(str(r) for r in sorted(expected))
        raise ValueError(f"{where}: {name} must have rank {ranks}{_layout(layout)}; got "
                         f"shape {shape_of(value)}.") from None


def shape(value: Any, expected: Sequence[int | None], *, name: str, where: str,
          layout: str = "", why: str = "") -> None:
    """``value`` has shape ``expected`` (``None``: any size on that axis).

    Raises:
      ValueError: naming ``where``, ``name``, the expected and the given shape (and
        ``why``: where the expected sizes come from).
    """
    try:
        chex.assert_shape(value, tuple(expected))
    except AssertionError:
        because = f" ({why})" if why else ""
        raise ValueError(f"{where}: {name} must have shape {_fmt_expected(expected)}"
                         f"{_layout(layout)}{because}; got shape {shape_of(value)}.") \
            from None


def kind(value: Any, expected: type, *, name: str, where: str, what: str = "") -> None:
    """``value``'s dtype is of the kind ``expected`` (``int``, ``float`` or ``bool``).

    Raises:
      TypeError: naming ``where``, ``name``, the expected kind and the given dtype.
    """
    try:
        chex.assert_type(value, expected)
    except AssertionError:
        kinds = {int: "an integer", float: "a floating-point", bool: "a boolean"}
        raise TypeError(f"{where}: {name} must have {kinds.get(expected, str(expected))} "
                        f"dtype{' (' + what + ')' if what else ''}; got "
                        f"{dtype_of(value)} of shape {shape_of(value)}.") from None


def same_size(a: Any, a_axis: int, b: Any, b_axis: int, *, names: tuple[str, str],
              where: str, what: str = "") -> None:
    """``a.shape[a_axis] == b.shape[b_axis]`` (e.g. one label per image).

    Raises:
      ValueError: naming both arguments, the axes and both shapes.
    """
    sa, sb = shape_of(a), shape_of(b)
    try:
        chex.assert_equal(sa[a_axis], sb[b_axis])
    except AssertionError:
        raise ValueError(f"{where}: {names[0]} and {names[1]} must agree on "
                         f"{what or 'their leading axis'}: {names[0]}.shape[{a_axis}] = "
                         f"{sa[a_axis]} (shape {sa}), {names[1]}.shape[{b_axis}] = "
                         f"{sb[b_axis]} (shape {sb}).") from None


def tree_like(tree: Any, reference: Any, *, name: str, reference_name: str, where: str,
              leading: Sequence[int | None] = (), what: str = "") -> None:
    """``tree`` has ``reference``'s structure and each leaf the reference leaf's shape
    with the ``leading`` axes in front (``None``: any size; e.g. ``(V,)`` for one update
    per victim).

    Raises:
      ValueError: naming both arguments and the first leaf (by its path) that differs,
        with both shapes, or the two structures when they differ.
    """
    try:
        chex.assert_trees_all_equal_structs(tree, reference)
    except AssertionError:
        got = jax.tree.structure(tree)
        want = jax.tree.structure(reference)
        raise ValueError(f"{where}: {name} must have the structure of {reference_name}"
                         f"{' (' + what + ')' if what else ''}; got {got}, expected "
                         f"{want}.") from None
    paths = jax.tree_util.tree_flatten_with_path(reference)[0]
    for (path, ref), leaf in zip(paths, jax.tree.leaves(tree), strict=True):
        expected = (*leading, *shape_of(ref))
        try:
            chex.assert_shape(leaf, expected)
        except AssertionError:
            where_in = jax.tree_util.keystr(path)
            raise ValueError(
                f"{where}: {name}{where_in} must have shape {_fmt_expected(expected)} "
                f"({reference_name}{where_in} has shape {shape_of(ref)}"
                f"{', after the leading axes ' + _fmt_expected(leading) if leading else ''}"
                f"{'; ' + what if what else ''}); got shape {shape_of(leaf)}.") from None
