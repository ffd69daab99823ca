"""The comparison helpers of tests.g4.stats on samples whose answer is known (no Geant4 needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.g4 import stats


@pytest.mark.parametrize(("chi2", "ndf", "p"), [(3.841459, 1, 0.05), (18.307038, 10, 0.05), (2.0, 2, math.exp(-1.0)),
                                                (124.342, 100, 0.05), (0.0, 5, 1.0),
                                                (50.0, 3, math.erfc(5.0) + math.sqrt(100 / math.pi) * math.exp(-25.0))])
def test_chi2_survival_function(chi2: float, ndf: int, p: float) -> None:
    assert stats.chi2_sf(chi2, ndf) == pytest.approx(p, rel=1e-3, abs=1e-12)


def test_detected_fraction_and_pulls() -> None:
    f = stats.detected_fraction(250, 1000)
    assert f.value == 0.25
    assert f.sigma == pytest.approx(math.sqrt(0.25 * 0.75 / 1000))
    assert f.pull(0.25) == 0.0
    assert f.pull(0.30) == pytest.approx(-0.05 / math.sqrt(0.3 * 0.7 / 1000))
    assert stats.detected_fraction(1000, 1000).pull(1.0) == 0.0
    assert stats.detected_fraction(999, 1000).pull(1.0) == -math.inf
    with pytest.raises(ValueError):
        stats.detected_fraction(5, 0)


def test_two_sample_chi2_is_chi2_distributed_for_unequal_samples() -> None:
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(40)) * 0.2  # 40 channels, 20 % detected in all
    shape_pulls, rate_pulls = [], []
    for _ in range(300):
        n_a, n_b = 20_000, 50_000
        a = rng.multinomial(n_a, [*p, 1 - p.sum()])[:-1]
        b = rng.multinomial(n_b, [*p, 1 - p.sum()])[:-1]
        chi2, ndf = stats.two_sample_chi2(a, b, n_a, n_b)
        rate_pulls.append((chi2 - ndf) / math.sqrt(2 * ndf))
        chi2, ndf = stats.two_sample_chi2(a, b)
        shape_pulls.append((chi2 - ndf) / math.sqrt(2 * ndf))
    for pulls in (rate_pulls, shape_pulls):
        # the mean of 300 standardised chi2 values: 0 within 4 / sqrt(300)
        assert abs(np.mean(pulls)) < 4 / math.sqrt(300)
    # a 20 % excess in one sample is seen by the rate test, not by the shape test
    a = rng.multinomial(20_000, [*p, 1 - p.sum()])[:-1]
    b = rng.multinomial(50_000, [*(p * 1.2), 1 - 1.2 * p.sum()])[:-1]
    chi2, ndf = stats.two_sample_chi2(a, b, 20_000, 50_000)
    assert stats.chi2_sf(chi2, ndf) < 1e-3
    chi2, ndf = stats.two_sample_chi2(a, b)
    assert stats.chi2_sf(chi2, ndf) > 1e-4


def test_two_sample_chi2_merges_small_bins() -> None:
    a = np.array([100, 120, 2, 3, 1, 0])
    b = np.array([210, 250, 4, 1, 2, 0])
    chi2, ndf = stats.two_sample_chi2(a, b, min_count=10)
    assert ndf == 2  # two big bins + one merged bin of 13, minus one for the shape
    chi2_all, ndf_all = stats.two_sample_chi2(a[:2], b[:2], min_count=10)
    assert ndf_all == 1
    assert chi2 >= 0
    assert chi2_all >= 0
    with pytest.raises(ValueError):
        stats.two_sample_chi2(a, b[:3])


def test_quantile_errors_cover_the_truth() -> None:
    rng = np.random.default_rng(2)
    qs = (0.1, 0.5, 0.9)
    truth = [-math.log(1 - q) for q in qs]  # exponential(1)
    pulls = {q: [] for q in qs}
    for _ in range(200):
        t = rng.exponential(1.0, 2000)
        for est, true in zip(stats.time_quantiles(t, qs), truth, strict=True):
            pulls[est.q].append((est.value - true) / est.error)
    for q in qs:
        # standardised errors: spread ~1 (within 25 %), mean ~0
        assert 0.75 < np.std(pulls[q]) < 1.25, q
        assert abs(np.mean(pulls[q])) < 0.3, q
    boot = stats.time_quantiles(rng.exponential(1.0, 2000), qs, bootstrap=200, rng=rng)
    order = stats.time_quantiles(rng.exponential(1.0, 2000), qs)
    for x, y in zip(boot, order, strict=True):
        assert 0.6 < x.error / y.error < 1.6


def test_quantile_pulls_see_a_shift() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.exponential(1.0, 5000), rng.exponential(1.0, 5000)
    assert max(abs(x) for x in stats.quantile_pulls(a, b)) < 4
    assert min(abs(x) for x in stats.quantile_pulls(a, b + 0.2)) > 4
