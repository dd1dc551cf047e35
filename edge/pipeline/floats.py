"""numpy's reductions of a short list of floats, in plain Python and bit for bit the same.

For a handful of values numpy's per-call cost (converting the list, dispatching the ufunc)
is most of the time; these give the same doubles without it. The spotter re-sums its
rings with :func:`np_sum` and picks an event's label with :func:`np_argmax`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["np_argmax", "np_sum"]


def np_sum(values: list[float]) -> float:
    """``float(np.sum(values))`` for float64 values, in plain Python: numpy's pairwise
    summation order (sequential below 8 values, 8 running partial sums up to 128), so the
    re-sum of a ring is the same double numpy would give. Longer rings go to numpy."""
    n = len(values)
    if n < 8:
        res = 0.0  # numpy starts from 0.0: a sum of -0.0 is 0.0
        for v in values:
            res += v
        return res
    if n > 128:
        return float(np.sum(np.asarray(values, dtype=np.float64)))
    r = values[:8]
    m = n - n % 8
    for i in range(8, m, 8):
        for j in range(8):
            r[j] += values[i + j]
    res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    for i in range(m, n):
        res += values[i]
    return 0.0 + res


def np_argmax(values: list[float]) -> int:
    """``np.argmax``: the first NaN, else the first largest value."""
    best, top = 0, values[0]
    for i, v in enumerate(values):
        if v != v:
            return i
        if v > top:
            best, top = i, v
    return best
