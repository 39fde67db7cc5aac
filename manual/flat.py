"""Named arrays that are views of one flat buffer, so that element-wise work over all of them is one call.

The parameters, their gradients and AdaGrad's accumulators each live in one contiguous buffer
(``FlatArrays``), laid out alike: parameter ``name`` is ``buffer[start:stop]`` reshaped. The clips
(element-wise, and by the global norm: ``clip_to_norm``) and the optimizers' updates are then a few
whole-buffer passes instead of a few passes per parameter.
Each pass computes, entry by entry, what the per-parameter loop computed, so the numbers
are bit for bit the same; at batch 1 the difference is only the number of calls (docs/speed.md).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike


class FlatArrays(dict):
    """A dict of named arrays (name -> view) whose values are views of ``self.buffer``, in insertion order."""

    buffer: np.ndarray  # (N,) the N entries of every array, one array after another

    @classmethod
    def zeros(cls, shapes: dict[str, tuple[int, ...]], dtype: DTypeLike) -> FlatArrays:
        """Zero arrays of these shapes (name -> shape), laid out in this order in one buffer."""
        sizes = [int(np.prod(shape)) for shape in shapes.values()]
        flat = cls()
        flat.buffer = np.zeros(sum(sizes), dtype=dtype)
        start = 0
        for (name, shape), size in zip(shapes.items(), sizes, strict=True):
            flat[name] = flat.buffer[start : start + size].reshape(shape)
            start += size
        return flat

    @classmethod
    def copy_of(cls, arrays: dict[str, np.ndarray], dtype: DTypeLike) -> FlatArrays:
        """A flat copy of ``arrays`` (name -> array), cast to ``dtype``."""
        flat = cls.zeros({name: np.shape(value) for name, value in arrays.items()}, dtype)
        for name, value in arrays.items():
            flat[name][...] = value
        return flat

    def zeros_like(self) -> FlatArrays:
        """Zeros laid out as these arrays: the same names, shapes, order and dtype."""
        return FlatArrays.zeros({name: value.shape for name, value in self.items()}, self.buffer.dtype)

    def in_buffer(self) -> bool:
        """Whether every value is still a view of ``buffer``: an entry replaced by another array
        (``flat["W"] = ...``) is not, and then only a per-array pass sees it."""
        return all(value.base is self.buffer for value in self.values())

    def same_layout(self, other: dict[str, np.ndarray]) -> bool:
        """Whether ``other`` is a FlatArrays, all in its buffer, with the same names, shapes, order and dtype:
        one buffer matches the other entry for entry."""
        if not isinstance(other, FlatArrays) or other.buffer.dtype != self.buffer.dtype or not other.in_buffer():
            return False
        return [(name, value.shape) for name, value in self.items()] == [
            (name, value.shape) for name, value in other.items()
        ]


NORM_CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s, added to the norm before dividing


def clip_to_norm(arrays: dict[str, np.ndarray], max_norm: float, norm: float) -> bool:
    """Scale every array in place by max_norm / (norm + 1e-6) when ``norm``, their global 2-norm
    (sqrt of the sum of every entry squared), exceeds ``max_norm``: ``torch.nn.utils.clip_grad_norm_``'s
    rule. Whether it scaled. A FlatArrays all in its buffer is one pass.

    The direction is kept and the length becomes max_norm (a hair under: the 1e-6 keeps a zero norm finite).
    """
    if not norm > max_norm:  # torch multiplies by the coefficient clamped to 1: no change at all
        return False
    scale = max_norm / (norm + NORM_CLIP_EPS)
    if isinstance(arrays, FlatArrays) and arrays.in_buffer():
        arrays.buffer *= scale
    else:
        for array in arrays.values():
            array *= scale
    return True
