"""Comparing two photon simulations (charon vs Geant4, or Geant4 vs an analytic expectation).

Tolerances come from the statistics of the samples, never from hard-coded results: binomial sigmas
for detected fractions, a two-sample chi-square for per-channel counts, order-statistic (or
bootstrap) errors for hit-time quantiles. Pure numpy; no scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

ArrayLike = npt.ArrayLike


@dataclass(frozen=True)
class Fraction:
    value: float
    sigma: float  # binomial: sqrt(p (1 - p) / n)
    k: int
    n: int

    def pull(self, expected: float) -> float:
        """(value - expected) in units of the binomial sigma of ``expected`` (exact when sigma is 0)."""
        sigma = math.sqrt(max(expected * (1.0 - expected), 0.0) / self.n) if self.n else 0.0
        if sigma == 0.0:
            return 0.0 if self.value == expected else math.copysign(math.inf, self.value - expected)
        return (self.value - expected) / sigma


def detected_fraction(k: int, n: int) -> Fraction:
    """k detected out of n, with the binomial sigma of the estimate."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    p = k / n
    return Fraction(p, math.sqrt(p * (1.0 - p) / n), k, n)


def two_proportion_z(k1: int, n1: int, k2: int, n2: int) -> float:
    """z of p1 - p2 under the pooled hypothesis p1 = p2 (0 when both are 0 or 1)."""
    p = (k1 + k2) / (n1 + n2)
    sigma = math.sqrt(p * (1.0 - p) * (1.0 / n1 + 1.0 / n2))
    return (k1 / n1 - k2 / n2) / sigma if sigma > 0 else 0.0


def _merge_small(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], min_count: float
                 ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Bins with a + b < min_count pooled into one; that pool dropped if still below min_count."""
    small = (a + b) < min_count
    keep_a, keep_b = list(a[~small]), list(b[~small])
    pa, pb = float(a[small].sum()), float(b[small].sum())
    if pa + pb >= min_count:
        keep_a.append(pa)
        keep_b.append(pb)
    return np.asarray(keep_a), np.asarray(keep_b)


def two_sample_chi2(counts_a: ArrayLike, counts_b: ArrayLike, n_a: int | None = None, n_b: int | None = None,
                    min_count: float = 10.0) -> tuple[float, int]:
    """Two-sample chi-square of histograms (e.g. hits per channel) from samples of unequal size.

    With ``n_a``, ``n_b`` (photons simulated in each sample) the bins are compared as rates per
    photon, so the total detected fraction is tested too: with the pooled p_i = (a_i + b_i) /
    (n_a + n_b), chi2 = sum (a_i/n_a - b_i/n_b)² / (p_i (1/n_a + 1/n_b)), ndf = bins. Without them
    only the shapes are compared (Numerical Recipes' chstwo with unequal totals A, B):
    chi2 = sum (sqrt(B/A) a_i - sqrt(A/B) b_i)² / (a_i + b_i), ndf = bins - 1. Bins with fewer than
    ``min_count`` entries in both samples together are merged (the merged bin dropped if still small).
    Returns (chi2, ndf).
    """
    a = np.asarray(counts_a, dtype=np.float64).ravel()
    b = np.asarray(counts_b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError("the histograms must have the same bins")
    a, b = _merge_small(a, b, min_count)
    if len(a) == 0:
        return 0.0, 0
    if (n_a is None) != (n_b is None):
        raise ValueError("give both n_a and n_b, or neither")
    if n_a is not None and n_b is not None:
        p = (a + b) / (n_a + n_b)
        chi2 = float(np.sum((a / n_a - b / n_b) ** 2 / (p * (1.0 / n_a + 1.0 / n_b))))
        return chi2, len(a)
    ta, tb = a.sum(), b.sum()
    chi2 = float(np.sum((math.sqrt(tb / ta) * a - math.sqrt(ta / tb) * b) ** 2 / (a + b)))
    return chi2, len(a) - 1


def chi2_sf(chi2: float, ndf: int) -> float:
    """P(X >= chi2) for a chi-square variable with ``ndf`` degrees of freedom (regularised Γ_Q)."""
    if ndf <= 0:
        return 1.0
    if chi2 <= 0:
        return 1.0
    return _gammq(ndf / 2.0, chi2 / 2.0)


def _gammq(a: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(a, x): series for x < a + 1, continued fraction else."""
    gln = math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-x + a * math.log(x) - gln))
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return math.exp(-x + a * math.log(x) - gln) * h


@dataclass(frozen=True)
class Quantile:
    q: float
    value: float
    error: float


def time_quantiles(times: ArrayLike, qs: Sequence[float] = (0.1, 0.5, 0.9), bootstrap: int = 0,
                   rng: np.random.Generator | None = None) -> list[Quantile]:
    """Quantiles of hit times with errors.

    Default error: order statistics — the rank of the q-quantile of n samples is binomial with
    sigma sqrt(n q (1 - q)), so the error is half the spread between the values at ranks
    n q ± that sigma. With ``bootstrap`` > 0: the standard deviation over that many resamples.
    """
    t = np.sort(np.asarray(times, dtype=np.float64).ravel())
    n = len(t)
    if n == 0:
        raise ValueError("no times")
    out = []
    for q in qs:
        value = float(np.quantile(t, q))
        if bootstrap > 0:
            g = rng if rng is not None else np.random.default_rng(0)
            samples = [np.quantile(t[g.integers(0, n, n)], q) for _ in range(bootstrap)]
            error = float(np.std(samples, ddof=1))
        else:
            s = math.sqrt(n * q * (1.0 - q))
            lo = int(max(0, math.floor(n * q - s)))
            hi = int(min(n - 1, math.ceil(n * q + s)))
            error = float(t[hi] - t[lo]) / 2.0
        out.append(Quantile(q, value, error))
    return out


def quantile_pulls(times_a: ArrayLike, times_b: ArrayLike, qs: Sequence[float] = (0.1, 0.5, 0.9)
                   ) -> list[float]:
    """(q_a - q_b) / sqrt(err_a² + err_b²) for each quantile (order-statistic errors)."""
    qa, qb = time_quantiles(times_a, qs), time_quantiles(times_b, qs)
    pulls = []
    for x, y in zip(qa, qb, strict=True):
        err = math.hypot(x.error, y.error)
        pulls.append((x.value - y.value) / err if err > 0 else (0.0 if x.value == y.value else math.inf))
    return pulls
