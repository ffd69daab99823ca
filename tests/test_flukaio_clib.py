"""The gateway driven by the real FlukaIO C library, when its sources are at hand.

The library has no licence, so the repository does not carry it: point ``CHARON_FLUKAIO_SRC`` at
a copy of its source tree (the directory with ``include/`` and ``src/``, e.g.
``xcoll/scattering_routines/fluka/flukaio`` from ``pip download --no-deps xcoll==0.6.1``, the
current 121-byte layout). The test then builds the library with its defaults (Nagle on) and a
small C client written here against its public API, and checks, with the library's own sends,
flushes and waits: batch round trips of a few milliseconds (no delayed-ACK stall), xcoll-style
parent ids in ``gen`` propagated like any photon, and the codes the library reports when the
gateway closes a connection mid-batch (``flukaio_send_particle`` -4 first, then the wait -104).
Without the variable (CI) it is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_flukaio_gateway import ENGINE, gateway, local, scrape

SRC = os.environ.get("CHARON_FLUKAIO_SRC")
pytestmark = [
    pytest.mark.skipif(not SRC, reason="CHARON_FLUKAIO_SRC (the FlukaIO C sources) not set"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc"),
    pytest.mark.skipif(sys.platform != "linux", reason="TCP_QUICKACK is Linux's"),
]

LIB_SOURCES = ("Connection", "FlukaIO", "FlukaIOHandshake", "FlukaIOServer", "NetIO")

CLIENT = r"""
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "FlukaIO.h"
#include "Message.h"

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static particle_info_t photon(int i) {
    particle_info_t p;
    memset(&p, 0, sizeof p);
    double a = 0.37 * i, c = cos(a), s = sin(a), u = 0.8 * sin(1.3 * i);
    double r = sqrt(1 - u * u);
    p.id = i + 1;
    p.gen = i + 1;  /* xcoll: the parent id */
    p.tx = r * c; p.ty = r * s; p.tz = u;
    p.sx = -s; p.sy = c;
    p.pc = 1239.84198 / 420.0 * 1e-9;
    p.pdgid = 22;
    p.weight = 1;
    return p;
}

/* rtt PORT: 2 warm-up batches, then 25 of 77..600 particles; prints median ms, hits, photons */
static int rtt(flukaio_connection_t *conn) {
    int sizes[] = {77, 120, 250, 400, 600};
    double ms[25];
    long hits = 0, sent = 0;
    flukaio_message_t msg;
    for (int b = -2; b < 25; b++) {
        int n = sizes[(b < 0 ? 0 : b) % 5];
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        flukaio_send_ipt(conn, (uint32_t)(b + 100), 1);
        for (int i = 0; i < n; i++) {
            particle_info_t p = photon(i);
            if (flukaio_send_particle(conn, &p) < 0) return 3;
        }
        flukaio_send_eob(conn);
        int got = 0;
        for (;;) {
            ssize_t r = flukaio_wait_message(conn, &msg);
            if (r < 0) { printf("wait %zd\n", r); return 4; }
            if (msg.type == N_EOB) break;
            if (msg.type == N_PART) got++;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (b >= 0) {
            ms[b] = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
            hits += got;
            sent += n;
        }
    }
    flukaio_send_eoc(conn);
    if (flukaio_wait_message(conn, &msg) < 0 || msg.type != N_END) return 5;
    qsort(ms, 25, sizeof ms[0], by_value);
    printf("median_ms %.3f hits %ld photons %ld\n", ms[12], hits, sent);
    return 0;
}

/* refused PORT: a batch the gateway refuses; prints the first negative send and the wait code */
static int refused(flukaio_connection_t *conn) {
    flukaio_message_t msg;
    flukaio_send_ipt(conn, 1, 1);
    int at = -1;
    ssize_t code = 0;
    for (int i = 0; i < 5000; i++) {
        particle_info_t p = photon(i);
        ssize_t r = flukaio_send_particle(conn, &p);
        if (r < 0) { at = i; code = r; break; }
        if (i == 200) usleep(300000);  /* the gateway has refused and closed by now */
    }
    printf("send %zd at %d wait %zd\n", code, at, flukaio_wait_message(conn, &msg));
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    flukaio_connection_t *conn = flukaio_connect(flukaio_conn(), "127.0.0.1", atoi(argv[2]));
    if (!conn) { printf("connect NULL errno %d\n", errno); return 0; }
    int rc = strcmp(argv[1], "rtt") == 0 ? rtt(conn) : refused(conn);
    flukaio_disconnect(conn);
    return rc;
}
"""


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert SRC is not None
    src = Path(SRC)
    out = tmp_path_factory.mktemp("flukaio")
    objects = []
    for name in LIB_SOURCES:
        obj = out / f"{name}.o"
        subprocess.run(["gcc", "-O2", "-fPIC", f"-I{src / 'include'}", f"-I{src / 'src'}", "-c",
                        str(src / "src" / f"{name}.c"), "-o", str(obj)], check=True, timeout=120)
        objects.append(str(obj))
    (out / "client.c").write_text(CLIENT)
    exe = out / "client"
    subprocess.run(["gcc", "-O2", f"-I{src / 'include'}", str(out / "client.c"), *objects, "-lm", "-o", str(exe)],
                   check=True, timeout=120)
    return exe


def _run(exe: Path, mode: str, port: int) -> str:
    done = subprocess.run([str(exe), mode, str(port)], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout.strip()


def test_the_library_gets_batches_answered_in_milliseconds_with_parent_ids_in_gen(client: Path) -> None:
    with gateway(local(ENGINE, 3), {"engine": {"backend": ENGINE, "seed": 3}}) as gw:
        words = _run(client, "rtt", gw.port).split()
        metrics = scrape(gw)
    median_ms, hits, photons = float(words[1]), int(words[3]), int(words[5])
    assert median_ms < 20, words
    assert photons == 5 * (77 + 120 + 250 + 400 + 600)
    assert 0.05 < hits / photons < 0.2  # parent ids do not finish the photons
    assert metrics['charon_gateway_particles_total{kind="skipped"}'] == 0


def test_the_library_sees_minus_4_then_minus_104_when_the_gateway_closes_mid_batch(client: Path) -> None:
    with gateway(local("echo"), {"engine": {"backend": "echo"}, "gateway": {"max_batch_particles": 50}}) as gw:
        words = _run(client, "refused", gw.port).split()
    assert words[::2] == ["send", "at", "wait"]
    assert words[1] == "-4"
    assert words[5] == "-104"


def test_a_peer_outside_the_allow_list_fails_to_connect(client: Path) -> None:
    with gateway(local("echo"), {"engine": {"backend": "echo"}, "gateway": {"allow": "10.0.0.0/8"}}) as gw:
        assert _run(client, "refused", gw.port).startswith("connect NULL")
