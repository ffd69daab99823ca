"""Photon <-> particle mapping (analytic values) and the gateway session rules, without sockets."""

from __future__ import annotations

import numpy as np
import pytest

from charon.engine.base import DetectorInfo, Hits
from charon.flukaio import codec, mapping
from charon.flukaio.codec import (
    Conf,
    DbleVar,
    End,
    Eob,
    FlukaIOProtocolError,
    HandshakeError,
    Hsk,
    IntVar,
    Ipt,
    Layout,
    Particle,
    ParticleBlock,
)
from charon.flukaio.session import Close, GatewaySession, Send, Simulate

# 420 nm photon: E = hc / lambda
PC_420 = mapping.HC_EV_NM / 420.0 * 1e-9


def block(particles: list[Particle], layout: Layout) -> ParticleBlock:
    return ParticleBlock(layout, b"".join(codec.encode(p, layout) for p in particles))


def photons_of(particles: list[Particle], layout: Layout, event_id: int = 1, seed: int = 0) -> object:
    return mapping.to_photons(mapping.records([block(particles, layout)], layout), layout, event_id, seed)


def test_dtypes_are_the_wire_layouts() -> None:
    p = Particle(id=7, gen=9, x=1.5, y=-2.0, z=3.0, tx=0.6, ty=0.0, tz=0.8, m=0.1, pc=2.0, t=3.0, weight=0.5,
                 aa=4, zz=2, sx=1.0, sy=2.0, sz=3.0, pdgid=-11, q=-1)
    for layout in Layout:
        rec = np.frombuffer(codec.encode(p, layout), mapping.dtype_of(layout))[0]
        assert (rec["size"], rec["type"], rec["id"], rec["gen"]) == (layout.value, 1, 7, 9)
        assert (rec["x"], rec["tz"], rec["pc"], rec["t"], rec["weight"]) == (1.5, 0.8, 2.0, 3.0, 0.5)
        if layout is Layout.CURRENT:
            assert (rec["sz"], rec["pdgid"], rec["q"]) == (3.0, -11, -1)
        else:
            assert (rec["aa"], rec["zz"]) == (4, 2)


def test_current_layout_photon_fields_and_units() -> None:
    photon = Particle(id=1, gen=0x800, x=1.0, y=-2.0, z=30.0, tx=0.0, ty=0.0, tz=2.0, pc=PC_420, t=2.5e-9,
                      sx=0.3, sy=0.0, sz=0.7, pdgid=22)
    proton = Particle(id=2, m=0.938, pc=450.0, pdgid=2212, q=1)
    electron_m0 = Particle(id=3, pc=PC_420, pdgid=11)  # massless-looking, but not a photon
    ph = photons_of([proton, photon, electron_m0], Layout.CURRENT, event_id=77)
    assert len(ph) == 1
    assert ph.event_id == 77
    assert (ph.x[0], ph.y[0], ph.z[0]) == pytest.approx((10.0, -20.0, 300.0))  # cm -> mm
    assert (ph.dx[0], ph.dy[0], ph.dz[0]) == pytest.approx((0.0, 0.0, 1.0))  # normalised
    assert (ph.polx[0], ph.poly[0], ph.polz[0]) == pytest.approx((1.0, 0.0, 0.0))  # spin made transverse
    assert ph.wavelength[0] == pytest.approx(420.0, rel=1e-6)
    assert ph.time[0] == pytest.approx(2.5, rel=1e-6)  # s -> ns
    assert ph.flags[0] == 0x800


def test_legacy_layout_selects_massless_neutral_particles() -> None:
    parts = [Particle(id=1, tz=1.0, pc=PC_420), Particle(id=2, tz=1.0, pc=PC_420, aa=1, zz=1, m=0.938),
             Particle(id=3, tz=1.0, pc=PC_420, zz=1), Particle(id=4, tz=1.0, pc=PC_420, m=0.1)]
    ph = photons_of(parts, Layout.LEGACY)
    assert len(ph) == 1
    assert ph.wavelength[0] == pytest.approx(420.0, rel=1e-6)


def test_random_polarisation_is_transverse_uniform_and_reproducible() -> None:
    n = 20000
    rng = np.random.default_rng(3)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1)[:, None]
    parts = [Particle(id=i, tx=d[i, 0], ty=d[i, 1], tz=d[i, 2], pc=PC_420) for i in range(n)]
    ph = photons_of(parts, Layout.LEGACY, event_id=5, seed=9)
    pol = np.stack([ph.polx, ph.poly, ph.polz], axis=1).astype(np.float64)
    direction = np.stack([ph.dx, ph.dy, ph.dz], axis=1).astype(np.float64)
    assert np.allclose(np.linalg.norm(pol, axis=1), 1.0, atol=1e-5)
    assert np.abs(np.einsum("ij,ij->i", pol, direction)).max() < 1e-5
    # for photons along +z the azimuth of the polarisation is uniform: <cos 2phi> = <sin 2phi> = 0
    along_z = [Particle(id=i, tz=1.0, pc=PC_420) for i in range(n)]
    pz = photons_of(along_z, Layout.LEGACY, event_id=5, seed=9)
    phi = np.arctan2(pz.poly.astype(np.float64), pz.polx.astype(np.float64))
    sigma = np.sqrt(0.5 / n)  # std of the mean of cos(2 phi)
    assert abs(np.cos(2 * phi).mean()) < 4 * sigma
    assert abs(np.sin(2 * phi).mean()) < 4 * sigma
    again = photons_of(along_z, Layout.LEGACY, event_id=5, seed=9)
    assert np.array_equal(again.polx, pz.polx)
    other = photons_of(along_z, Layout.LEGACY, event_id=6, seed=9)
    assert not np.array_equal(other.polx, pz.polx)


def test_zero_spin_gets_a_random_transverse_polarisation() -> None:
    ph = photons_of([Particle(tx=1.0, pc=PC_420, pdgid=22), Particle(tx=1.0, sx=2.0, pc=PC_420, pdgid=22)],
                    Layout.CURRENT)
    assert abs(ph.polx[0]) < 1e-6
    assert ph.poly[0] ** 2 + ph.polz[0] ** 2 == pytest.approx(1.0, rel=1e-5)
    assert abs(ph.polx[1]) < 1e-6  # spin along the direction carries no polarisation


def test_unusable_energy_is_not_propagated_but_counted() -> None:
    unusable = [Particle(tz=1.0, pc=0.0, pdgid=22), Particle(tz=1.0, pc=-1.0, pdgid=22),
                Particle(tz=1.0, pc=float("inf"), pdgid=22)]
    conversion = mapping.convert(mapping.records([block([*unusable, Particle(tz=1.0, pc=PC_420, pdgid=22)],
                                                        Layout.CURRENT)], Layout.CURRENT), Layout.CURRENT, 1, 0)
    assert conversion.dropped["bad_momentum"] == 3
    assert conversion.photons.wavelength.tolist() == [pytest.approx(420.0, rel=1e-6)]


def test_empty_batch() -> None:
    assert len(mapping.to_photons(mapping.records([], Layout.CURRENT), Layout.CURRENT, 0, 0)) == 0
    assert mapping.hits_to_bytes(Hits.empty(), _info(), Layout.CURRENT) == b""


def _info() -> DetectorInfo:
    return DetectorInfo(np.array([100.0, 200.0], np.float32), np.array([0.0, -50.0], np.float32),
                        np.array([10.0, 20.0], np.float32), np.zeros(2, np.int32))


def test_hits_become_photon_particles_at_the_pmt() -> None:
    f = np.float32
    hits = Hits(np.array([1, 0], np.uint32), np.array([0.6, 0], f), np.array([0, 0], f), np.array([0.8, 1], f),
                np.array([0, 1], f), np.array([1, 0], f), np.array([0, 0], f), np.array([420, 500], f),
                np.array([12.5, 0], f), np.array([0x4, 0x404], np.uint32))
    for layout in Layout:
        data = mapping.hits_to_bytes(hits, _info(), layout)
        out = codec.StreamDecoder(layout).feed(data)
        assert len(data) == 2 * layout.value
        first = out[0]
        assert isinstance(first, Particle)
        assert (first.id, first.gen) == (1, 4)
        assert (first.x, first.y, first.z) == pytest.approx((20.0, -5.0, 2.0))  # mm -> cm
        assert (first.tx, first.ty, first.tz) == pytest.approx((0.6, 0.0, 0.8), abs=1e-7)
        assert first.pc == pytest.approx(PC_420, rel=1e-7)
        assert first.t == pytest.approx(12.5e-9)
        assert (first.m, first.weight) == (0.0, 1.0)
        if layout is Layout.CURRENT:
            assert (first.sx, first.sy, first.sz, first.pdgid, first.q) == (0.0, 1.0, 0.0, 22, 0)
        else:
            assert (first.aa, first.zz) == (0, 0)
    bad = Hits(np.array([2], np.uint32), *(np.zeros(1, f) for _ in range(8)), np.zeros(1, np.uint32))
    with pytest.raises(ValueError, match="channel"):
        mapping.hits_to_bytes(bad, _info(), Layout.CURRENT)


# -- session rules -------------------------------------------------------------------------------

def started(**kw: object) -> GatewaySession:
    session = GatewaySession(**kw)  # type: ignore[arg-type]
    assert session.handle(Hsk(3, 5, 99)) == [Send(codec.encode(Hsk(3, 1, 99)))]
    return session


def test_session_handshake_first() -> None:
    for first in (Eob(), Hsk(4, 1, 1), block([Particle()], Layout.CURRENT)):
        with pytest.raises(HandshakeError):
            GatewaySession().handle(first)


def test_session_event_ids_from_ipt_or_counting() -> None:
    s = started()
    p = block([Particle(pdgid=22)] * 3, Layout.CURRENT)
    assert s.handle(Ipt(41, 2)) == []
    assert s.handle(p) == []
    assert s.pending_particles == 3
    (sim,) = s.handle(Eob())
    assert isinstance(sim, Simulate)
    assert (sim.batch.event_id, sim.batch.ipt, sim.batch.particles) == (41, 2, 3)
    (sim,) = s.handle(Eob())  # no IPT: previous + 1
    assert isinstance(sim, Simulate)
    assert (sim.batch.event_id, sim.batch.ipt, sim.batch.particles) == (42, None, 0)
    for ignored in (Conf(), IntVar(0, 5), DbleVar(0, 1.0)):
        assert s.handle(ignored) == []
    with pytest.raises(FlukaIOProtocolError) as info:
        s.handle(Hsk())
    assert info.value.reason == "unexpected"
    assert s.handle(End()) == [Send(codec.END_BYTES), Close()]
    with pytest.raises(FlukaIOProtocolError):
        s.handle(Eob())


def test_session_batch_limit() -> None:
    s = started(max_batch_particles=4)
    s.handle(block([Particle()] * 4, Layout.LEGACY))
    with pytest.raises(FlukaIOProtocolError) as info:
        s.handle(block([Particle()], Layout.LEGACY))
    assert info.value.reason == "batch_too_large"


def test_echo_session_flushes_like_the_library_buffer() -> None:
    s = started(echo=True)
    one = block([Particle(id=1)], Layout.CURRENT)
    sends = []
    for _ in range(100):
        sends += s.handle(one)
    # 77 particles = 9317 B reach the 9216 B threshold; the remaining 23 wait for EOB
    assert [len(a.data) for a in sends if isinstance(a, Send)] == [77 * 121]
    (rest,) = s.handle(Eob())
    assert isinstance(rest, Send)
    assert rest.data == one.data * 23 + codec.EOB_BYTES
    assert s.handle(Ipt(1, 1)) == []
    assert s.handle(End()) == [Send(codec.END_BYTES), Close()]
