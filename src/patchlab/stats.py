"""Confidence intervals for success rates and for differences of rates.

- Wilson score interval for a binomial proportion (Wilson 1927), which keeps
  sensible coverage for small n and rates near 0 or 1, where the normal
  ("Wald") interval fails.
- Newcombe's hybrid score interval for a difference of two proportions
  (Newcombe 1998, "Interval estimation for the difference between independent
  proportions", method 10): combines the two Wilson intervals. Used for a
  candidate's lift over the best control. The two rates are measured on the
  same images; treating them as independent gives a somewhat wider (more
  cautious) interval than a paired method would.

Both accept fractional success counts (e.g. a per-image mean over random
placements times the number of images) and numpy arrays.
"""
from __future__ import annotations

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(successes, n, z: float = Z95):
    """Wilson score interval (low, high) for `successes` out of `n`.

    center = (p + z^2/2n) / (1 + z^2/n); half = z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n).
    n = 0 gives (0, 1): no information. Scalars in, floats out; arrays in, arrays out.
    """
    s = np.asarray(successes, dtype=float)
    m = np.asarray(n, dtype=float)
    safe = np.where(m > 0, m, 1.0)
    p = s / safe
    z2 = z * z
    denom = 1 + z2 / safe
    center = (p + z2 / (2 * safe)) / denom
    half = z * np.sqrt(np.clip(p * (1 - p) / safe + z2 / (4 * safe * safe), 0, None)) / denom
    # the interval always contains p (rounding can put the bound a hair past it at p = 0 or 1)
    low = np.where(m > 0, np.clip(np.minimum(center - half, p), 0.0, 1.0), 0.0)
    high = np.where(m > 0, np.clip(np.maximum(center + half, p), 0.0, 1.0), 1.0)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def difference_interval(s1, n1, s2, n2, z: float = Z95) -> tuple[float, float, float]:
    """Newcombe's hybrid score interval for p1 - p2: returns (difference, low, high)."""
    p1 = s1 / n1 if n1 else 0.0
    p2 = s2 / n2 if n2 else 0.0
    l1, u1 = wilson_interval(s1, n1, z)
    l2, u2 = wilson_interval(s2, n2, z)
    d = p1 - p2
    low = d - float(np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2))
    high = d + float(np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))
    return float(d), max(-1.0, low), min(1.0, high)
