"""Writes the v2 golden vectors (one JSON file per vector) and their index in this directory.

Frames are built here with ``struct``, ``json`` and ``hashlib`` only, independently of charon's
codec; tests/test_v2_vectors.py holds the codec, ``charon serve`` and the router to these files and
fails if a file differs from what this script writes. Run ``python proto-spec/vectors/v2/generate.py``
after editing a vector and commit the JSON files with it.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

MAGIC = b"CHARON/2"
HELLO, WELCOME, SIMULATE, RESULT, ERROR, JOB, JOB_DONE = b"H", b"W", b"S", b"R", b"E", b"J", b"K"
NO_TAG = 2**64 - 1
NO_EVENT = 2**32 - 1
HAS_POSITIONS = 0x1
CODES = {"OK": 0, "MALFORMED": 1, "UNKNOWN_COMMAND": 2, "VERSION": 3, "NO_SESSION": 4, "CREDIT_EXCEEDED": 5,
         "TOO_LARGE": 6, "QUEUE_FULL": 7, "DEADLINE": 8, "NO_WORKERS": 9, "SIMULATION_FAILED": 10,
         "RETRIES_EXHAUSTED": 11}
V1_REQUEST_HEADERS = (b"PING", b"RUN_BEGIN", b"RUN_END", b"DETECTOR_INFO", b"PHOTONDATA")
CHERENKOV, SCINTILLATION, SURFACE_DETECT = 0x400, 0x800, 0x4


def f32(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def u32(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def body(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def table(events: list[tuple[int, int, int]]) -> bytes:
    return b"".join(struct.pack("<QII", *e) for e in events)


def hexes(frames: list[bytes]) -> list[str]:
    return [f.hex() for f in frames]


#: Photons as (pos, dir, pol, wavelength, time, flags).
Photon = tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float], float, float, int]
A: Photon = ((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0), 400.0, 0.0, CHERENKOV)
B: Photon = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), 420.0, 1.0, SCINTILLATION)
C: Photon = ((0.0, 2.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.0, 0.0), 450.0, 2.5, 0)
D: Photon = ((-3.0, 0.0, 1.0), (0.0, -1.0, 0.0), (1.0, 0.0, 0.0), 380.0, 4.0, CHERENKOV)


def arrays(photons: list[Photon]) -> list[bytes]:
    """The twelve photon arrays (v1 order) of photons one after another."""
    out = [f32(*(p[k][axis] for p in photons)) for k in range(3) for axis in range(3)]
    out.append(f32(*(p[3] for p in photons)))
    out.append(f32(*(p[4] for p in photons)))
    out.append(u32(*(p[5] for p in photons)))
    return out


def simulate(events: list[tuple[int, int, list[Photon]]]) -> list[bytes]:
    """SIMULATE of (tag, event id, photons) events."""
    every = [p for _, _, ps in events for p in ps]
    return [MAGIC, SIMULATE, table([(t, e, len(ps)) for t, e, ps in events]), *arrays(every)]


def hits_frame(channels: list[int], photons: list[Photon], positions: bool) -> tuple[bytes, int]:
    """A hits frame for hits of ``photons`` on ``channels`` (as the echo engine makes them)."""
    parts = [u32(*channels)]
    parts += [f32(*(p[1][axis] for p in photons)) for axis in range(3)]
    parts += [f32(*(p[2][axis] for p in photons)) for axis in range(3)]
    parts += [f32(*(p[3] for p in photons)), f32(*(p[4] for p in photons)),
              u32(*(p[5] | SURFACE_DETECT for p in photons))]
    if positions:
        parts += [f32(*(p[0][axis] for p in photons)) for axis in range(3)]
    return b"".join(parts), HAS_POSITIONS if positions else 0


def result(tag: int, event_id: int, channels: list[int], photons: list[Photon], positions: bool) -> list[bytes]:
    hits, flags = hits_frame(channels, photons, positions)
    return [MAGIC, RESULT, struct.pack("<QIII", tag, event_id, len(channels), flags), hits]


def error_head(tag: int, event_id: int, code: str) -> str:
    return struct.pack("<QII", tag, event_id, CODES[code]).hex()


# Detector of v1's detector_info_p2: channel 0 at (1.5, 2.5, 3.5) mm, channel 1 at (-1000, 0, 12.5).
P2_X, P2_Y, P2_Z = f32(1.5, -1000.0), f32(2.5, 0.0), f32(3.5, 12.5)
P2_DIGEST = hashlib.sha256(P2_X + P2_Y + P2_Z).hexdigest()


def message(name: str, ref: str, description: str, frames: list[bytes], decoded: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "kind": "message", "ref": ref, "description": description, "frames": hexes(frames),
            "decoded": decoded}


def rejection(name: str, ref: str, description: str, request: list[bytes], errors: list[tuple[int, int, str]], *,
              hello_first: bool = True, server: dict[str, Any] | None = None, results: list[int] | None = None
              ) -> dict[str, Any]:
    v: dict[str, Any] = {"name": name, "kind": "rejection", "ref": ref, "description": description,
                         "hello_first": hello_first, "request": hexes(request),
                         "error_heads": [error_head(*e) for e in errors]}
    if results:
        v["result_tags"] = results
    if server:
        v["server"] = server
    return v


def vectors() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    out.append({"name": "magic", "kind": "encoding", "ref": "§2.3",
                "description": "The v2 magic, the command bytes and the reserved tag and event id; no v1 request "
                               "header equals or starts with the magic.",
                "magic": MAGIC.hex(), "commands": {k: v.hex() for k, v in {
                    "HELLO": HELLO, "WELCOME": WELCOME, "SIMULATE": SIMULATE, "RESULT": RESULT, "ERROR": ERROR,
                    "JOB": JOB, "JOB_DONE": JOB_DONE}.items()},
                "no_tag": f"{NO_TAG:016x}", "no_event": f"{NO_EVENT:08x}", "codes": CODES,
                "v1_headers": [h.hex() for h in V1_REQUEST_HEADERS]})
    assert not any(h.startswith(MAGIC) or MAGIC.startswith(h) for h in V1_REQUEST_HEADERS)
    out.append(message("hello", "§3.2", "HELLO of version 2 with seed 0 (the v1 random streams).",
                       [MAGIC, HELLO, body({"seed": 0, "version": 2})], {"type": "Hello", "version": 2, "seed": 0}))
    out.append(message("hello_seed_max_client", "§3.2", "HELLO with the largest seed and a client name.",
                       [MAGIC, HELLO, body({"client": "ratpac", "seed": 2**64 - 1, "version": 2})],
                       {"type": "Hello", "version": 2, "seed": 2**64 - 1, "client": "ratpac"}))
    welcome = {"credit": 512, "engine": "echo", "fingerprint": "0" * 64, "hit_positions": True,
               "max_events_per_message": 256, "max_photons_per_message": 4194304, "n_channels": 2,
               "pmt_digest": P2_DIGEST, "seed": 9, "version": 2}
    out.append(message("welcome_p2", "§3.3", "WELCOME of a server with the 2-channel detector of v1's "
                       "detector_info_p2: pmt_digest is sha256 of its x, y, z frames concatenated.",
                       [MAGIC, WELCOME, body(welcome)], {"type": "Welcome", **welcome,
                                                         "pmt_frames": hexes([P2_X, P2_Y, P2_Z])}))
    two = simulate([(0, 7, [A, B]), (1, 8, [C])])
    out.append(message("simulate_two_events", "§4", "Events 7 (photons A, B: v1's photondata_event7) and 8 "
                       "(photon C) in one SIMULATE, tags 0 and 1: each array holds A, B, C.",
                       two, {"type": "Simulate", "events": [[0, 7, 2], [1, 8, 1]]}))
    out.append(message("simulate_zero_photons", "§4.1", "One event without photons: table and twelve empty "
                       "arrays; answered with a RESULT of no hits.",
                       simulate([(3, 0, [])]), {"type": "Simulate", "events": [[3, 0, 0]]}))
    out.append(message("result_positions", "§5", "RESULT of event 7 (tag 0): photons A and B detected on "
                       "channels 0 and 1 with their positions (flags 0x1): 52 bytes per hit.",
                       result(0, 7, [0, 1], [A, B], True), {"type": "Result", "tag": 0, "event_id": 7, "n_hits": 2,
                                                            "flags": 1}))
    out.append(message("result_no_positions", "§5", "RESULT of one hit without positions (flags 0): 40 bytes.",
                       result(1, 8, [1], [C], False), {"type": "Result", "tag": 1, "event_id": 8, "n_hits": 1,
                                                       "flags": 0}))
    out.append(message("result_no_hits", "§5", "RESULT with no hits: an empty hits frame.",
                       [MAGIC, RESULT, struct.pack("<QIII", 3, 0, 0, 0), b""],
                       {"type": "Result", "tag": 3, "event_id": 0, "n_hits": 0, "flags": 0}))
    out.append(message("error_event", "§5, §6", "ERROR for event 9 (tag 5): SIMULATION_FAILED with a message.",
                       [MAGIC, ERROR, struct.pack("<QII", 5, 9, 10), b"RuntimeError: engine failed"],
                       {"type": "Error", "tag": 5, "event_id": 9, "code": "SIMULATION_FAILED",
                        "message": "RuntimeError: engine failed"}))
    three = simulate([(0, 10, [A, B]), (1, 11, [C]), (2, 12, [D, A])])
    job1 = [MAGIC, JOB, struct.pack("<Q", 42) + table([(0, 10, 2), (1, 11, 1)]), *arrays([A, B, C])]
    job2 = [MAGIC, JOB, struct.pack("<Q", 42) + table([(2, 12, 2)]), *arrays([D, A])]
    out.append({"name": "split_into_jobs", "kind": "split", "ref": "§4.5, §7",
                "description": "A SIMULATE of events of 2, 1 and 2 photons cut into jobs of at most 3 photons "
                               "for a session with seed 42: events 10 and 11 in one JOB, event 12 in another; "
                               "the arrays are slices of the message's.",
                "simulate": hexes(three), "seed": 42, "job_max_photons": 3, "jobs": [hexes(job1), hexes(job2)]})
    ok_hits, ok_flags = hits_frame([1], [C], True)
    done = [MAGIC, JOB_DONE, struct.pack("<QIIII", 0, 10, 0, 1, ok_flags) + struct.pack("<QIIII", 1, 11, 10, 0, 0),
            ok_hits, b"engine failed"]
    out.append({"name": "job_done_fanout", "kind": "fanout", "ref": "§7",
                "description": "A JOB_DONE with event 10 simulated (one hit, with position) and event 11 failed: "
                               "the router sends one RESULT (hits frame passed on) and one ERROR.",
                "job_done": hexes(done), "client": [
                    hexes([MAGIC, RESULT, struct.pack("<QIII", 0, 10, 1, ok_flags), ok_hits]),
                    hexes([MAGIC, ERROR, struct.pack("<QII", 1, 11, 10), b"engine failed"])]})
    one = simulate([(4, 20, [A])])
    out.append(rejection("simulate_before_hello", "§4.4, §6", "SIMULATE on a connection that sent no HELLO: "
                         "NO_SESSION for each event.", one, [(4, 20, "NO_SESSION")], hello_first=False))
    out.append(rejection("hello_version_3", "§3.2, §6", "HELLO asking for version 3: VERSION, about the message.",
                         [MAGIC, HELLO, body({"version": 3})], [(NO_TAG, NO_EVENT, "VERSION")], hello_first=False))
    out.append(rejection("hello_not_json", "§3.1, §6", "HELLO whose body is not JSON: MALFORMED.",
                         [MAGIC, HELLO, b"version=2"], [(NO_TAG, NO_EVENT, "MALFORMED")], hello_first=False))
    out.append(rejection("hello_seed_negative", "§3.2, §6", "HELLO with a negative seed: MALFORMED (the message "
                         "names HELLO.seed).", [MAGIC, HELLO, body({"seed": -1, "version": 2})],
                         [(NO_TAG, NO_EVENT, "MALFORMED")], hello_first=False))
    out.append(rejection("hello_without_body", "§2.4, §6", "HELLO without its body frame: MALFORMED.",
                         [MAGIC, HELLO], [(NO_TAG, NO_EVENT, "MALFORMED")], hello_first=False))
    out.append(rejection("hello_extra_frame", "§2.4, §6", "HELLO with a fourth frame (v2 does not ignore "
                         "extra frames): MALFORMED.", [MAGIC, HELLO, body({"version": 2}), b""],
                         [(NO_TAG, NO_EVENT, "MALFORMED")], hello_first=False))
    out.append(rejection("unknown_command", "§2.4, §6", "Command X: UNKNOWN_COMMAND.",
                         [MAGIC, b"X"], [(NO_TAG, NO_EVENT, "UNKNOWN_COMMAND")]))
    out.append(rejection("job_from_a_client", "§2.4, §7", "A JOB sent to the client port: UNKNOWN_COMMAND "
                         "(JOBs travel only inside CHARONW1).", job2, [(NO_TAG, NO_EVENT, "UNKNOWN_COMMAND")]))
    out.append(rejection("command_two_bytes", "§2.4, §6", "A two-byte command frame: UNKNOWN_COMMAND.",
                         [MAGIC, b"SS", *one[2:]], [(NO_TAG, NO_EVENT, "UNKNOWN_COMMAND")]))
    out.append(rejection("magic_only", "§2.4, §6", "The magic alone: UNKNOWN_COMMAND.",
                         [MAGIC], [(NO_TAG, NO_EVENT, "UNKNOWN_COMMAND")]))
    out.append(rejection("table_13_bytes", "§4, §6", "An event table that is not a multiple of 16 bytes: "
                         "MALFORMED about the message (no tag can be read).",
                         [MAGIC, SIMULATE, table([(4, 20, 1)])[:13], *arrays([A])], [(NO_TAG, NO_EVENT, "MALFORMED")]))
    out.append(rejection("table_repeats_a_tag", "§4.2, §6", "Two events with tag 4: MALFORMED about the message.",
                         [MAGIC, SIMULATE, table([(4, 20, 1), (4, 21, 1)]), *arrays([A, B])],
                         [(NO_TAG, NO_EVENT, "MALFORMED")]))
    out.append(rejection("table_reserved_tag", "§4.2, §6", "Tag 2^64-1 is reserved: MALFORMED.",
                         [MAGIC, SIMULATE, table([(NO_TAG, 20, 1)]), *arrays([A])], [(NO_TAG, NO_EVENT, "MALFORMED")]))
    ragged = simulate([(0, 30, [A]), (1, 31, [B])])
    ragged[4] = ragged[4][:4]  # y holds one photon, the table says two
    out.append(rejection("simulate_ragged", "§4, §6", "Array y shorter than the table's photon count: MALFORMED "
                         "for each event of the message.", ragged, [(0, 30, "MALFORMED"), (1, 31, "MALFORMED")]))
    out.append(rejection("simulate_fourteen_frames", "§2.4, §6", "SIMULATE without its flags array: MALFORMED "
                         "for each event.", simulate([(0, 30, [A])])[:14], [(0, 30, "MALFORMED")]))
    out.append(rejection("simulate_sixteen_frames", "§2.4, §6", "SIMULATE with a trailing frame (v2 does not "
                         "ignore extra frames): MALFORMED for each event.", [*simulate([(0, 30, [A])]), b""],
                         [(0, 30, "MALFORMED")]))
    credit = simulate([(0, 40, [A]), (1, 41, [B]), (2, 42, [C])])
    out.append(rejection("credit_exceeded", "§4.3, §6", "With credit 2, three events in one message: the first "
                         "two are simulated, the third gets CREDIT_EXCEEDED.", credit, [(2, 42, "CREDIT_EXCEEDED")],
                         server={"v2": {"credit": 2}}, results=[0, 1]))
    out.append(rejection("too_many_events", "§4.3, §6", "With max_events_per_message 2, a message of three "
                         "events: TOO_LARGE for each.", credit,
                         [(0, 40, "TOO_LARGE"), (1, 41, "TOO_LARGE"), (2, 42, "TOO_LARGE")],
                         server={"v2": {"max_events_per_message": 2}}))
    out.append(rejection("too_many_photons", "§4.3, §6", "With max_photons_per_message 2, a message of three "
                         "photons: TOO_LARGE for each event.", credit,
                         [(0, 40, "TOO_LARGE"), (1, 41, "TOO_LARGE"), (2, 42, "TOO_LARGE")],
                         server={"v2": {"max_photons_per_message": 2}}))
    return out


def render(vector: dict[str, Any]) -> str:
    return json.dumps(vector, indent=1, ensure_ascii=False) + "\n"


README_HEAD = """\
# v2 golden vectors (spec: [../../charon-v2.md](../../charon-v2.md))

`generate.py` writes these files with `struct`, `json` and `hashlib` only (independent of charon's
codec); `tests/test_v2_vectors.py` fails if a file differs from what it writes, and holds the
codec, `charon serve` and the router to them. Frames are lowercase hex (`""` = empty frame),
payload only (no envelope). `ref` names the sections of the spec.

| kind | fields | checked by |
|---|---|---|
| `encoding` | `magic`, `commands`, `no_tag`, `no_event`, `codes`, `v1_headers` (none is a prefix of the magic) | the codec's constants |
| `message` | `frames`; `decoded` (type and fields) | decode gives the fields; encode gives the frames byte for byte |
| `split` | `simulate`, `seed`, `job_max_photons`, `jobs` (exact JOB frames) | the session's admission and split |
| `fanout` | `job_done` (a worker's JOB_DONE), `client` (exact RESULT / ERROR messages) | the router's fan-out |
| `rejection` | `hello_first` (a HELLO opens the session first), `request`, `error_heads` (exact ERROR frame 2 of each ERROR, in order), `result_tags` (events that get a RESULT), `server` (settings the answer needs) | `charon serve` and the router + a worker, over a DEALER |

| vector | kind | ref | description |
|---|---|---|---|
"""


def main() -> int:
    all_vectors = vectors()
    names = [v["name"] for v in all_vectors]
    assert len(names) == len(set(names)), "duplicate vector name"
    check = "--check" in sys.argv
    stale = []
    files = {f"{v['name']}.json": render(v) for v in all_vectors}
    files["README.md"] = README_HEAD + "".join(
        f"| [`{v['name']}`]({v['name']}.json) | {v['kind']} | {v['ref']} | {v['description'].replace('|', '/')} |\n"
        for v in all_vectors)
    for name, text in files.items():
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    extra = sorted({p.name for p in HERE.glob("*.json")} - set(files))
    if check and (stale or extra):
        sys.stderr.write(f"stale: {stale}, unknown files: {extra}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
