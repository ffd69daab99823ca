"""The ``gen`` field: generation data by default (xcoll writes parent ids), Chroma flags on request;
photons that are not propagated are counted by reason and summarised once per batch."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from charon.flukaio import codec, mapping
from charon.flukaio.client import connect
from charon.flukaio.codec import Hsk, Layout, Particle, ParticleBlock, StreamDecoder
from charon.protocol.tokens import Flag
from tests.test_flukaio_gateway import ENGINE, gateway, local, photon_batch, run_batches, scrape, wait_for_log

PC_420 = mapping.HC_EV_NM / 420.0 * 1e-9


def _records(particles: list[Particle], layout: Layout = Layout.CURRENT) -> mapping.Records:
    return mapping.records([ParticleBlock(layout, b"".join(codec.encode(p, layout) for p in particles))], layout)


def test_generation_keeps_only_the_origin_bits_and_propagates_every_photon() -> None:
    parents = [1, 2, 3, 0x404, 0x801, 0x80000000, 0xFFFFFFFF]
    photons = [Particle(id=i, gen=g, tz=1.0, pc=PC_420, pdgid=22) for i, g in enumerate(parents)]
    conversion = mapping.convert(_records(photons), Layout.CURRENT, 1, 0)
    assert len(conversion.photons) == len(parents)
    origin = int(Flag.CHERENKOV | Flag.SCINTILLATION)
    assert conversion.photons.flags.tolist() == [g & origin for g in parents]
    assert conversion.skipped == 0


def test_flags_mode_takes_gen_as_history_bits_and_drops_finished_photons() -> None:
    gens = [0, int(Flag.CHERENKOV), int(Flag.NO_HIT), int(Flag.SURFACE_DETECT | Flag.CHERENKOV),
            int(Flag.RAYLEIGH_SCATTER), int(Flag.NAN_ABORT)]
    photons = [Particle(id=i, gen=g, tz=1.0, pc=PC_420, pdgid=22) for i, g in enumerate(gens)]
    conversion = mapping.convert(_records(photons), Layout.CURRENT, 1, 0, gen_flags=True)
    assert conversion.photons.flags.tolist() == [0, int(Flag.CHERENKOV), int(Flag.RAYLEIGH_SCATTER)]
    assert conversion.dropped == {"not_photon": 0, "bad_momentum": 0, "bad_kinematics": 0, "finished": 3}


def test_every_particle_left_out_is_counted_once_under_its_first_reason() -> None:
    good: dict[str, Any] = {"tz": 1.0, "pc": PC_420, "pdgid": 22}
    particles = [
        Particle(id=0, **good),
        Particle(id=1, pdgid=2212, m=0.938, pc=450.0, tz=1.0),      # not a photon
        Particle(id=2, pdgid=2212, pc=0.0),                          # not a photon (first reason)
        Particle(id=3, tz=1.0, pc=0.0, pdgid=22),                    # bad momentum
        Particle(id=4, tz=1.0, pc=-1.0, pdgid=22),
        Particle(id=5, tz=1.0, pc=float("nan"), pdgid=22),
        Particle(id=6, tz=1.0, pc=1e-300, pdgid=22),                 # wavelength overflows float32
        Particle(id=7, tz=0.0, pc=PC_420, pdgid=22),                 # no direction
        Particle(id=8, tz=float("inf"), pc=PC_420, pdgid=22),
        Particle(id=9, x=1e300, tz=1.0, pc=PC_420, pdgid=22),        # position overflows float32 mm
        Particle(id=10, t=float("nan"), tz=1.0, pc=PC_420, pdgid=22),
        Particle(id=11, gen=int(Flag.BULK_ABSORB), **good),          # finished only with gen=flags
        Particle(id=12, tz=1e-300, pc=PC_420, pdgid=22),             # tiny but finite: a direction
    ]
    default = mapping.convert(_records(particles), Layout.CURRENT, 3, 0)
    assert default.dropped == {"not_photon": 2, "bad_momentum": 4, "bad_kinematics": 4, "finished": 0}
    assert len(default.photons) == 3
    assert np.isfinite(np.stack(default.photons.columns()[:11])).all()
    assert default.photons.dz.tolist() == [1.0, 1.0, 1.0]
    flags = mapping.convert(_records(particles), Layout.CURRENT, 3, 0, gen_flags=True)
    assert flags.dropped["finished"] == 1
    assert len(flags.photons) == 2


def _hit_fraction(port: int, gen: list[int], rng_seed: int) -> tuple[float, int]:
    rng = np.random.default_rng(rng_seed)
    batch = photon_batch(len(gen), Layout.CURRENT, rng)
    batch = [dataclasses.replace(p, gen=parent) for p, parent in zip(batch, gen, strict=True)]
    reply = run_batches(port, Layout.CURRENT, [(rng_seed, batch)])
    messages = StreamDecoder(Layout.CURRENT).feed(reply)
    assert messages[0] == Hsk()
    hits = sum(isinstance(m, Particle) for m in messages)
    return hits / len(gen), hits


def test_xcoll_parent_ids_give_the_normal_hit_fraction() -> None:
    """xcoll writes parent ids 1, 2, 3, ... into gen; the hit fraction must not change because of it."""
    n = 20_000
    parents = list(range(1, n + 1))
    sections = {"engine": {"backend": ENGINE, "seed": 5}}
    with gateway(local(ENGINE, 5), sections) as gw:
        normal, _ = _hit_fraction(gw.port, [0] * n, 21)
        xcoll, _ = _hit_fraction(gw.port, parents, 22)
        metrics = scrape(gw)
    assert normal > 0.05
    sigma = np.sqrt(2 * normal * (1 - normal) / n)  # two independent samples
    assert abs(xcoll - normal) < 5 * sigma, (normal, xcoll)
    assert metrics['charon_gateway_particles_total{kind="photon"}'] == 2 * n
    assert metrics['charon_gateway_particles_total{kind="skipped"}'] == 0

    # the other interpretation, on request: parent ids read as history bits finish most photons
    with gateway(local(ENGINE, 5), sections, {"gateway": {"gen": "flags"}}) as gw:
        as_flags, _ = _hit_fraction(gw.port, parents, 22)
        metrics = scrape(gw)
        line = wait_for_log(gw, r".*particles not propagated.*")
    finished = metrics['charon_gateway_not_propagated_total{reason="finished"}']
    terminal = int(Flag.NO_HIT | Flag.BULK_ABSORB | Flag.SURFACE_DETECT | Flag.SURFACE_ABSORB | Flag.NAN_ABORT)
    assert finished == sum(1 for g in parents if g & terminal)
    assert finished > 0.9 * n
    assert as_flags < normal / 5
    assert f"{int(finished)} of {n} particles not propagated (finished={int(finished)};" in line


def test_one_log_line_per_batch_summarises_what_was_left_out() -> None:
    rng = np.random.default_rng(23)
    batch = photon_batch(40, Layout.CURRENT, rng, protons=3)
    batch.append(Particle(id=999, tz=1.0, pc=0.0, pdgid=22))
    with gateway(local("echo"), {"engine": {"backend": "echo"}}) as gw:
        run_batches(gw.port, Layout.CURRENT, [(1, batch), (2, batch)])
        gw.logs.wait_for("event 2: 4 of 44")
        lines = [line for line in gw.logs.text().splitlines() if "not propagated" in line]
        metrics = scrape(gw)
    assert len(lines) == 2
    assert "event 1: 4 of 44 particles not propagated (not_photon=3, bad_momentum=1;" in lines[0]
    assert metrics['charon_gateway_not_propagated_total{reason="not_photon"}'] == 6
    assert metrics['charon_gateway_not_propagated_total{reason="bad_momentum"}'] == 2
    assert metrics['charon_gateway_particles_total{kind="skipped"}'] == 8


@pytest.mark.parametrize("layout", [Layout.LEGACY, Layout.CURRENT])
def test_generation_default_applies_to_both_layouts(layout: Layout) -> None:
    extra: dict[str, Any] = {"pdgid": 22} if layout is Layout.CURRENT else {}
    photons = [Particle(id=1, gen=7, tz=1.0, pc=PC_420, **extra),
               Particle(id=2, gen=0x405, tz=1.0, pc=PC_420, **extra)]
    conversion = mapping.convert(_records(photons, layout), layout, 1, 0)
    assert conversion.photons.flags.tolist() == [0, 0x400]


def test_an_xcoll_style_session_as_in_the_docs(tmp_path: Path) -> None:
    """The docs' worked example: network.nfo, NPART, BRHO, then track_fluka-style turns in xcoll's units."""
    light = 299792458.0
    rng = np.random.default_rng(24)
    alive, beta0 = 3000, 0.999
    with gateway(local(ENGINE, 5), {"engine": {"backend": ENGINE, "seed": 5}}) as gw:
        (tmp_path / "network.nfo").write_text(f"127.0.0.1\n{gw.port}\n")
        host, port = (tmp_path / "network.nfo").read_text().split()
        with connect(host, int(port), read_timeout=60, write_timeout=60) as conn:
            conn.send_npart(alive)
            conn.send_brhono(450.0)
            received = []
            for turn, fluka_id in ((1, 7), (2, 7)):
                x, y = rng.uniform(-50, 50, (2, alive))        # mm
                xp, yp = rng.uniform(-800, 800, (2, alive))    # 1e-3 rad: wide photon cones
                zeta = rng.uniform(-10, 10, alive)             # mm
                e = mapping.HC_EV_NM / rng.uniform(350, 550, alive) * 1e-6  # MeV
                part_id, parent_id = np.arange(1, alive + 1), rng.integers(1, 100, alive)
                conn.send_ipt(turn, fluka_id)
                tz = 1.0 / np.sqrt(1.0 + (xp * 1e-3) ** 2 + (yp * 1e-3) ** 2)
                for i in range(alive):
                    conn.send_particle(Particle(
                        id=int(part_id[i]), gen=int(parent_id[i]), weight=1.0,
                        x=x[i] * 0.1, y=y[i] * 0.1, z=0.0,
                        tx=xp[i] * 1e-3 * tz[i], ty=yp[i] * 1e-3 * tz[i], tz=tz[i],
                        m=0.0, pc=e[i] * 1e-3, t=-zeta[i] * 1e-3 / (beta0 * light), pdgid=22))
                conn.send_eob()
                hits = []
                while not isinstance(msg := conn.wait_message(), codec.Eob):
                    assert isinstance(msg, Particle)
                    hits.append(msg)
                received.append(hits)
            conn.send_eoc()
            assert conn.wait_message() == codec.End()
        metrics = scrape(gw)
    channels = len(local(ENGINE, 5)().detector_info())
    for hits in received:
        assert 0 < len(hits) <= alive  # fits the arrays track_fluka reads them into
        assert all(h.id < channels and h.pdgid == 22 and h.gen & int(Flag.SURFACE_DETECT) for h in hits)
    assert metrics['charon_gateway_particles_total{kind="photon"}'] == 2 * alive
    assert metrics['charon_gateway_particles_total{kind="skipped"}'] == 0
