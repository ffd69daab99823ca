"""Batch planning, packing and the per-event split of a pass's hits (pure numpy, no engine)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from charon.engine.base import Hits, Photons
from charon.engine.batching import BatchPlanner, pack, plan_groups


def make_photons(event_id: int, n: int, rng: np.random.Generator) -> Photons:
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return Photons.from_arrays(event_id, rng.uniform(-100, 100, (n, 3)), d, np.cross(d, [0.0, 0.0, 1.0]),
                               rng.uniform(300, 600, n), rng.uniform(0, 50, n),
                               rng.choice([0, 0x400, 0x800], n))


# ------------------------------------------------------------------------------------ planning


def test_plan_groups_keeps_order_and_budget() -> None:
    groups = plan_groups([3, 4, 2, 6, 1, 1], 7)
    assert [list(g) for g in groups] == [[0, 1], [2], [3, 4], [5]]


def test_plan_groups_oversized_request_runs_alone() -> None:
    groups = plan_groups([2, 50, 3, 3], 10)
    assert [list(g) for g in groups] == [[0], [1], [2, 3]]


def test_plan_groups_exact_fill_and_zero_sizes() -> None:
    assert [list(g) for g in plan_groups([5, 5, 0, 5], 10)] == [[0, 1, 2], [3]]
    assert plan_groups([], 10) == []


def test_plan_groups_random_sizes_respect_budget() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        budget = int(rng.integers(1, 1000))
        sizes = [int(s) for s in rng.integers(0, 1200, int(rng.integers(0, 30)))]
        groups = plan_groups(sizes, budget)
        assert [i for g in groups for i in g] == list(range(len(sizes)))
        for g in groups:
            total = sum(sizes[i] for i in g)
            assert total <= budget or len(g) == 1
        # Greedy: a group could not have taken the next request without breaking the budget.
        for a, b in itertools.pairwise(groups):
            assert sum(sizes[i] for i in a) + sizes[b[0]] > budget


def test_plan_groups_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="max_photons"):
        plan_groups([1], 0)
    with pytest.raises(ValueError, match="negative"):
        plan_groups([1, -1], 10)


def test_planner_holds_partial_group_until_the_delay() -> None:
    planner = BatchPlanner(max_photons=100, max_delay_s=0.5)
    d = planner.decide([10, 20], [1.0, 1.2], now=1.1)
    assert d.run == []
    assert d.wait_s == pytest.approx(0.4)
    d = planner.decide([10, 20], [1.0, 1.2], now=1.5)
    assert [list(g) for g in d.run] == [[0, 1]]
    assert d.wait_s is None


def test_planner_runs_full_groups_at_once_and_holds_the_tail() -> None:
    planner = BatchPlanner(max_photons=100, max_delay_s=1.0)
    d = planner.decide([60, 50, 30], [0.0, 0.1, 0.2], now=0.3)
    # 50 + 30 = 80 < 100 and its oldest request (t = 0.1) waited only 0.2 s: the tail is held.
    assert [list(g) for g in d.run] == [[0]]
    assert d.wait_s == pytest.approx(0.8)


def test_planner_runs_a_tail_that_fills_the_budget() -> None:
    planner = BatchPlanner(max_photons=100, max_delay_s=1.0)
    d = planner.decide([40, 60], [0.0, 0.0], now=0.0)
    assert [list(g) for g in d.run] == [[0, 1]]
    assert d.wait_s is None


def test_planner_zero_delay_and_flush_run_everything() -> None:
    assert [list(g) for g in BatchPlanner(100, 0.0).decide([1, 2], [5.0, 5.0], now=5.0).run] == [[0, 1]]
    d = BatchPlanner(100, 10.0).decide([1, 2], [5.0, 5.0], now=5.0, flush=True)
    assert [list(g) for g in d.run] == [[0, 1]]
    assert BatchPlanner(100, 1.0).decide([], [], now=0.0).run == []


def test_planner_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_delay_s"):
        BatchPlanner(10, -1.0)
    with pytest.raises(ValueError, match="length"):
        BatchPlanner(10, 1.0).decide([1], [], now=0.0)


# ------------------------------------------------------------------------------------- packing


def test_pack_lays_out_events_back_to_back() -> None:
    rng = np.random.default_rng(1)
    batch = [make_photons(7, 5, rng), make_photons(8, 0, rng), make_photons(9, 3, rng)]
    packed = pack(batch)
    assert len(packed) == 8
    assert packed.n_events == 3
    assert packed.bounds.tolist() == [0, 5, 5, 8]
    assert packed.evidx.tolist() == [0] * 5 + [2] * 3
    for i, p in enumerate(batch):
        rows = packed.rows(i)
        np.testing.assert_array_equal(packed.pos[rows], np.stack([p.x, p.y, p.z], axis=1))
        np.testing.assert_array_equal(packed.dir[rows], np.stack([p.dx, p.dy, p.dz], axis=1))
        np.testing.assert_array_equal(packed.pol[rows], np.stack([p.polx, p.poly, p.polz], axis=1))
        np.testing.assert_array_equal(packed.wavelengths[rows], p.wavelength)
        np.testing.assert_array_equal(packed.t[rows], p.time)
        np.testing.assert_array_equal(packed.flags[rows], p.flags)
    for a in (packed.pos, packed.dir, packed.pol):
        assert a.dtype == np.float32
        assert a.flags.c_contiguous
    assert packed.flags.dtype == np.uint32
    assert packed.evidx.dtype == np.uint32


def test_pack_accepts_read_only_wire_views() -> None:
    rng = np.random.default_rng(2)
    p = make_photons(1, 4, rng)
    frozen = Photons(p.event_id, *(np.frombuffer(getattr(p, f).tobytes(), getattr(p, f).dtype)
                                   for f in ("x", "y", "z", "dx", "dy", "dz", "polx", "poly", "polz",
                                             "wavelength", "time", "flags")))
    assert not frozen.x.flags.writeable
    packed = pack([frozen])
    np.testing.assert_array_equal(packed.pos[:, 0], p.x)
    assert packed.flags.flags.writeable


def test_pack_empty_batch() -> None:
    packed = pack([])
    assert len(packed) == 0
    assert packed.n_events == 0
    assert packed.pos.shape == (0, 3)


# ------------------------------------------------------------------------------------ splitting


def fake_hits(n: int, rng: np.random.Generator) -> Hits:
    f = [rng.normal(size=n).astype(np.float32) for _ in range(8)]
    return Hits(rng.integers(0, 50, n).astype(np.uint32), *f, rng.integers(0, 4096, n).astype(np.uint32))
