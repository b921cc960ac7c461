"""Which 10 ms windows of 16-bit audio are loud: the twin of ``engine._native.energy``.

numpy over the whole append: each window's sum of squares in float64, exact for these
integers, compared with the threshold as the native pass compares its 64-bit sums.
"""

from __future__ import annotations

import numpy as np

__all__ = ["voiced_windows"]


def voiced_windows(data: bytes | bytearray | memoryview, window: int, threshold: float) -> bytes:
    """One byte per whole ``window`` of int16 little-endian samples in ``data``: 1 where the
    window's sum of squares reaches ``threshold``, else 0. A partial window at the end is
    left out.

    Raises:
        ValueError: ``window`` is not positive.
    """
    if window <= 0:
        raise ValueError(f"window must be positive, not {window}")
    windows = len(data) // (2 * window)
    if not windows:
        return b""
    x = np.frombuffer(data, dtype="<i2", count=windows * window).astype(np.float64)
    frames = x.reshape(windows, window)
    energy = np.einsum("ij,ij->i", frames, frames)
    return (energy >= threshold).astype(np.uint8).tobytes()
