"""Writes the v1 golden vectors (one JSON file per vector) in this directory.

The frames are built here with ``struct`` only, independently of charon's codec, and the vectors
quoted from the protocol reference are checked against their literal hex; the tests then hold the
codec to these files. Run ``python proto-spec/vectors/v1/generate.py`` after editing a vector and
commit the JSON files with it; tests/test_v1_vectors.py fails if the files and this script differ.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

PING = b"PING"
RUN_BEGIN = b"RUN_BEGIN"
RUN_END = b"RUN_END"
DETECTOR_INFO = b"DETECTOR_INFO"
PHOTONDATA = b"PHOTONDATA"
ACK = b"ACK"
PONG = b"PONG"
SIM_COMPLETE = b"SIM_COMPLETE"
SIM_COMPLETE_ASYNC = b"SIM_COMPLETE_ASYNC"
SIM_FAILED = b"SIM_FAILED"
UNKNOWN_REQUEST = b"UNKNOWN_REQUEST"
NO_WORKERS = b"NO_WORKERS"

CHERENKOV = 0x400
SCINTILLATION = 0x800
SURFACE_DETECT = 0x4
NO_HIT = 0x1

IDENTITY = bytes.fromhex("006b8b4567")  # a ROUTER-generated peer identity


def f32(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def u32(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def i32(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}i", *values)


def f64(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}d", *values)


def hexes(frames: list[bytes]) -> list[str]:
    return [f.hex() for f in frames]


def photon_arrays(photons: list[dict[str, Any]]) -> list[bytes]:
    """The twelve PHOTONDATA array frames of a list of photons."""
    cols = {name: [p[name] for p in photons] for name in ("pos", "dir", "pol")}
    arrays = [f32(*(c[k] for c in cols[name])) for name in ("pos", "dir", "pol") for k in range(3)]
    arrays.append(f32(*(p["wavelength"] for p in photons)))
    arrays.append(f32(*(p.get("time", 0.0) for p in photons)))
    arrays.append(u32(*(p.get("flags", 0) for p in photons)))
    return arrays


def photondata(event_id: int, photons: list[dict[str, Any]]) -> list[bytes]:
    return [PHOTONDATA, u32(event_id, len(photons)), *photon_arrays(photons)]


ONE_PHOTON = [{"pos": (0.0, 0.0, 0.0), "dir": (1.0, 0.0, 0.0), "pol": (0.0, 0.0, 1.0),
               "wavelength": 400.0}]
EVENT7_PHOTONS = [
    {"pos": (0.0, 0.0, 0.0), "dir": (1.0, 0.0, 0.0), "pol": (0.0, 0.0, 1.0),
     "wavelength": 400.0, "time": 0.0, "flags": CHERENKOV},
    {"pos": (1.0, 0.0, 0.0), "dir": (0.0, 1.0, 0.0), "pol": (0.0, 0.0, 1.0),
     "wavelength": 420.0, "time": 1.0, "flags": SCINTILLATION},
]
# Reference §7 vector 5, quoted literally.
EVENT7_HEX = [
    "50484f544f4e44415441", "0700000002000000", "000000000000803f", "0000000000000000",
    "0000000000000000", "0000803f00000000", "000000000000803f", "0000000000000000",
    "0000000000000000", "0000000000000000", "0000803f0000803f", "0000c8430000d243",
    "000000000000803f", "0004000000080000",
]


def sim_complete_shape(event_id: int, n_photons: int, **extra: Any) -> dict[str, Any]:
    shape: dict[str, Any] = {
        "header": "SIM_COMPLETE", "frames": 12, "event_id": u32(event_id).hex(),
        "hits_max": n_photons, "hits_echo": n_photons,
    }
    shape.update(extra)
    return shape


def exchange(name: str, ref: str, description: str, request: list[bytes], *,
             decoded: dict[str, Any], reply: list[bytes] | None = None,
             reply_shape: dict[str, Any] | None = None, roundtrip_frames: int | None = None,
             **extra: Any) -> dict[str, Any]:
    v: dict[str, Any] = {"name": name, "kind": "exchange", "ref": ref, "description": description,
                         "request": hexes(request), "decoded": decoded}
    if roundtrip_frames is not None:
        v["roundtrip_frames"] = roundtrip_frames
    if reply is not None:
        v["reply"] = hexes(reply)
        v.setdefault("reply_shape", {"header": reply[0].decode("ascii"), "frames": len(reply)})
    if reply_shape is not None:
        v["reply_shape"] = reply_shape
    v.update(extra)
    return v


def malformed(event_id: int | None) -> dict[str, Any]:
    return {"error": "MalformedRequest", "event_id": event_id}


def sim_failed(event_id: int) -> list[bytes]:
    return [SIM_FAILED, u32(event_id)]


def vectors() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    add = out.append
    ok_ping = {"type": "Ping"}

    # ---- PING, RUN_BEGIN, RUN_END ----------------------------------------------------------------
    add(exchange("ping", "§5.1", "PING is answered with exactly ACK.", [PING],
                 decoded=ok_ping, reply=[ACK], roundtrip_frames=1))
    add(exchange("ping_extra_frames", "§2.7, §5.1", "Extra trailing frames after PING are ignored.",
                 [PING, b"extra", b""], decoded=ok_ping, reply=[ACK], roundtrip_frames=1))
    add(exchange("ping_legacy_pong", "§5.1",
                 "Only with server.legacy_pong (pre-2024 clients): PING is answered with PONG. "
                 "Never the default: the ratpac-two client rejects PONG.",
                 [PING], decoded=ok_ping, reply=[PONG], roundtrip_frames=1,
                 server={"legacy_pong": True}))
    add(exchange("run_begin", "§5.2", "RUN_BEGIN with the output filename is answered ACK.",
                 [RUN_BEGIN, b"output.root"], decoded={"type": "RunBegin", "filename": "output.root"},
                 reply=[ACK], roundtrip_frames=2))
    add(exchange("run_begin_one_frame", "§5.2, §6",
                 "RUN_BEGIN without its filename frame is still ACK (informational).",
                 [RUN_BEGIN], decoded={"type": "RunBegin", "filename": None}, reply=[ACK]))
    add(exchange("run_begin_three_frames", "§5.2, §6",
                 "RUN_BEGIN with an extra frame is still ACK; the extra frame is ignored.",
                 [RUN_BEGIN, b"output.root", b"extra"],
                 decoded={"type": "RunBegin", "filename": "output.root"}, reply=[ACK],
                 roundtrip_frames=2))
    add(exchange("run_begin_empty_filename", "§2.4, §5.2, §6",
                 "RUN_BEGIN with an empty filename frame: ACK; the empty frame is payload, not an "
                 "envelope delimiter.",
                 [RUN_BEGIN, b""], decoded={"type": "RunBegin", "filename": None}, reply=[ACK],
                 roundtrip_frames=2))
    add(exchange("run_begin_not_utf8", "§5.2, §6",
                 "RUN_BEGIN whose filename is not UTF-8: ACK, filename treated as absent.",
                 [RUN_BEGIN, b"\xff\xfe.root"], decoded={"type": "RunBegin", "filename": None},
                 reply=[ACK]))
    add(exchange("run_end", "§5.2", "RUN_END is answered ACK.", [RUN_END],
                 decoded={"type": "RunEnd"}, reply=[ACK], roundtrip_frames=1))
    add(exchange("run_end_extra_frames", "§5.2, §6", "RUN_END with extra frames is still ACK.",
                 [RUN_END, b"output.root"], decoded={"type": "RunEnd"}, reply=[ACK],
                 roundtrip_frames=1))

    # ---- DETECTOR_INFO ---------------------------------------------------------------------------
    p2 = [DETECTOR_INFO, f32(1.5, -1000.0), f32(2.5, 0.0), f32(3.5, 12.5), i32(1, -1)]
    assert hexes(p2)[1:] == ["0000c03f00007ac4", "0000204000000000", "0000604000004841",
                             "01000000ffffffff"]
    add(exchange("detector_info_p2", "§5.3",
                 "DETECTOR_INFO of a 2-channel detector: channel 0 at (1.5, 2.5, 3.5) mm type 1, "
                 "channel 1 at (-1000, 0, 12.5) mm type -1. The reply bytes hold for this detector; "
                 "against any other server only the shape is checked.",
                 [DETECTOR_INFO], decoded={"type": "DetectorInfoRequest"}, reply=p2,
                 roundtrip_frames=1,
                 detector={"x": [1.5, -1000.0], "y": [2.5, 0.0], "z": [3.5, 12.5], "type": [1, -1]}))
    add(exchange("detector_info_p0", "§5.3",
                 "DETECTOR_INFO of a detector without channels: header and four empty frames.",
                 [DETECTOR_INFO], decoded={"type": "DetectorInfoRequest"},
                 reply=[DETECTOR_INFO, b"", b"", b"", b""], roundtrip_frames=1,
                 detector={"x": [], "y": [], "z": [], "type": []}))

    # ---- PHOTONDATA, well formed -----------------------------------------------------------------
    ev7 = photondata(7, EVENT7_PHOTONS)
    assert hexes(ev7) == EVENT7_HEX
    assert sum(len(f) for f in ev7) == 114
    add(exchange("photondata_event7", "§5.4",
                 "Event 7, two photons: A at the origin moving +x (Cherenkov, 400 nm, 0 ns), B at "
                 "(1, 0, 0) mm moving +y (scintillation, 420 nm, 1 ns), both polarised +z. The "
                 "reply depends on the simulation: 12 frames, event id echoed in exactly 4 bytes, "
                 "ten hit frames of 4*H bytes each; a detected photon carries SURFACE_DETECT and "
                 "its origin bit (e.g. 0x404).",
                 ev7, decoded={"type": "PhotonData", "event_id": 7, "n_photons": 2},
                 reply_shape=sim_complete_shape(7, 2), roundtrip_frames=14))
    add(exchange("photondata_fifteen_frames", "§2.7, §6",
                 "A 15th trailing frame is ignored: the request is event 7 of vector 5.",
                 [*ev7, b"\xde\xad\xbe\xef"],
                 decoded={"type": "PhotonData", "event_id": 7, "n_photons": 2},
                 reply_shape=sim_complete_shape(7, 2), roundtrip_frames=14))
    add(exchange("photondata_no_run_begin", "§1, §6",
                 "PHOTONDATA without any RUN_BEGIN before it (ChAR0N's async mode crashed): "
                 "charon answers synchronously, SIM_COMPLETE.",
                 photondata(42, ONE_PHOTON),
                 decoded={"type": "PhotonData", "event_id": 42, "n_photons": 1},
                 reply_shape=sim_complete_shape(42, 1), roundtrip_frames=14))
    terminal = [{**ONE_PHOTON[0], "flags": NO_HIT}, {**ONE_PHOTON[0], "flags": SURFACE_DETECT}]
    add(exchange("photondata_terminal_flags", "§5.4, §7",
                 "Photons arriving with NO_HIT (0x1) or SURFACE_DETECT (0x4) are finished and are "
                 "not propagated: a simulating backend returns no hits (the echo backend does not "
                 "simulate and echoes them).",
                 photondata(16, terminal),
                 decoded={"type": "PhotonData", "event_id": 16, "n_photons": 2},
                 reply_shape=sim_complete_shape(16, 2, hits_physical=0), roundtrip_frames=14))
    nan = [{**ONE_PHOTON[0], "pos": (float("nan"), 0.0, 0.0)}]
    add(exchange("photondata_nan_position", "§5.4, §7",
                 "A photon with a non-finite position is not a protocol error: SIM_COMPLETE; a "
                 "simulating backend flags it NAN_ABORT and returns no hit for it.",
                 photondata(17, nan),
                 decoded={"type": "PhotonData", "event_id": 17, "n_photons": 1},
                 reply_shape=sim_complete_shape(17, 1, hits_physical=0), roundtrip_frames=14))
    for evid in (0, 1, 0x7FFFFFFF, 0xFFFFFFFF):
        add(exchange(f"event_id_echo_{evid:x}", "§5.4",
                     f"Event id {evid:#x} comes back byte-identical in a 4-byte frame.",
                     photondata(evid, ONE_PHOTON),
                     decoded={"type": "PhotonData", "event_id": evid, "n_photons": 1},
                     reply_shape=sim_complete_shape(evid, 1), roundtrip_frames=14))
    add(exchange("photondata_zero_photons", "§5.4, §9",
                 "Zero photons: SIM_COMPLETE with ten empty hit frames, never SIM_FAILED (the "
                 "client would resend it forever).",
                 [PHOTONDATA, u32(9, 0), *[b""] * 12],
                 decoded={"type": "PhotonData", "event_id": 9, "n_photons": 0},
                 reply=[SIM_COMPLETE, u32(9), *[b""] * 10], reply_shape=sim_complete_shape(9, 0),
                 roundtrip_frames=14))

    # ---- PHOTONDATA, malformed (reference §3.7 and §7.8) -----------------------------------------
    one = photon_arrays(ONE_PHOTON)
    add(exchange("photondata_thirteen_frames", "§6",
                 "13 frames (the March-2024 client had no flags frame): SIM_FAILED with the id.",
                 [PHOTONDATA, u32(5, 1), *one[:11]], decoded=malformed(5), reply=sim_failed(5)))
    add(exchange("photondata_two_frames", "§6",
                 "Header and metadata only: SIM_FAILED with the id.",
                 [PHOTONDATA, u32(6, 1)], decoded=malformed(6), reply=sim_failed(6)))
    add(exchange("photondata_header_only", "§6",
                 "Header only: no event id to echo, UNKNOWN_REQUEST.",
                 [PHOTONDATA], decoded=malformed(None), reply=[UNKNOWN_REQUEST]))
    add(exchange("photondata_metadata_empty", "§6",
                 "Empty metadata frame (it is payload, not an envelope delimiter): no event id, "
                 "UNKNOWN_REQUEST.",
                 [PHOTONDATA, b"", *one], decoded=malformed(None), reply=[UNKNOWN_REQUEST]))
    add(exchange("photondata_metadata_3_bytes", "§6",
                 "Metadata shorter than an event id: UNKNOWN_REQUEST.",
                 [PHOTONDATA, bytes.fromhex("070000"), *one], decoded=malformed(None),
                 reply=[UNKNOWN_REQUEST]))
    add(exchange("photondata_metadata_4_bytes", "§6",
                 "Metadata holds the event id but no count: SIM_FAILED with the id.",
                 [PHOTONDATA, u32(8), *one], decoded=malformed(8), reply=sim_failed(8)))
    add(exchange("photondata_metadata_7_bytes", "§6",
                 "Metadata of 7 bytes: SIM_FAILED with the id in its first 4 bytes.",
                 [PHOTONDATA, u32(9, 1)[:7], *one], decoded=malformed(9), reply=sim_failed(9)))
    add(exchange("photondata_metadata_9_bytes", "§6",
                 "Metadata not a multiple of 4 bytes: SIM_FAILED with the id.",
                 [PHOTONDATA, u32(10, 1) + b"\x00", *one], decoded=malformed(10),
                 reply=sim_failed(10)))
    add(exchange("photondata_count_mismatch", "§6",
                 "Metadata count 3 with 1-element arrays: SIM_FAILED with the id.",
                 [PHOTONDATA, u32(11, 3), *one], decoded=malformed(11), reply=sim_failed(11)))
    two = photon_arrays([ONE_PHOTON[0], ONE_PHOTON[0]])
    add(exchange("photondata_ragged", "§6",
                 "Ragged arrays (x holds 2 floats, y 1, count 2): SIM_FAILED with the id.",
                 [PHOTONDATA, u32(12, 2), two[0], one[1], *two[2:]], decoded=malformed(12),
                 reply=sim_failed(12)))
    add(exchange("photondata_x_5_bytes", "§6",
                 "x frame of 5 bytes (not a multiple of 4): SIM_FAILED with the id.",
                 [PHOTONDATA, u32(13, 1), one[0] + b"\x00", *one[1:]], decoded=malformed(13),
                 reply=sim_failed(13)))
    add(exchange("photondata_flags_5_bytes", "§6",
                 "flags frame of 5 bytes: SIM_FAILED with the id.",
                 [PHOTONDATA, u32(14, 1), *one[:11], one[11] + b"\x00"], decoded=malformed(14),
                 reply=sim_failed(14)))

    # ---- unknown headers -------------------------------------------------------------------------
    unknown = {"error": "UnknownRequest"}
    for name, header, why in (
        ("unknown_header_foo", b"FOO", "An unknown header"),
        ("unknown_header_lowercase_ping", b"ping", "Headers are case-sensitive"),
        ("unknown_header_nul_terminated", b"PING\x00", "Headers carry no terminator"),
        ("unknown_header_empty", b"", "An empty header frame (sent after a delimiter)"),
        ("unknown_header_ack", ACK, "A reply token sent as a request"),
    ):
        add(exchange(name, "§5.6, §6", f"{why}: UNKNOWN_REQUEST.", [header], decoded=unknown,
                     reply=[UNKNOWN_REQUEST]))

    # ---- engine failure --------------------------------------------------------------------------
    add({"name": "sim_failed_engine_error", "kind": "error_reply", "ref": "§5.5, §6",
         "description": "The engine raised while simulating well-formed event 7: [SIM_FAILED, id].",
         "error": "SimulationFailed", "event_id": 7, "reply": hexes(sim_failed(7))})

    # ---- well-formed requests that cannot be served (§6.1): both policies -----------------------
    def unservable(name: str, description: str, error: str, request: list[bytes], event_id: int | None,
                   explicit_reply: list[bytes], explicit_outcome: str, reason: str) -> dict[str, Any]:
        return {"name": name, "kind": "unservable", "ref": "§12", "description": description,
                "error": error, "request": hexes(request), "event_id": event_id,
                "explicit": {"reply": hexes(explicit_reply), "outcome": explicit_outcome},
                "silent": {"reply": None, "outcome": f"dropped_{reason}"}}

    ev7_one = photondata(7, ONE_PHOTON)
    for error, outcome, reason, why in (
        ("QueueFull", "queue_full", "queue_full", "the router's queue is at its bound"),
        ("DeadlineExceeded", "deadline", "deadline", "the queue deadline passed with every worker busy"),
        ("NoWorkers", "deadline", "no_workers", "the queue deadline passed with no worker registered"),
    ):
        add(unservable(f"unservable_{reason}_photondata",
                       f"Well-formed PHOTONDATA event 7, {why}: silent (default) sends nothing, "
                       "explicit sends NO_WORKERS.", error, ev7_one, 7, [NO_WORKERS], outcome, reason))
        add(unservable(f"unservable_{reason}_detector_info",
                       f"DETECTOR_INFO, {why}: silent sends nothing (the client fails it after its "
                       "tries), explicit sends NO_WORKERS.", error, [DETECTOR_INFO], None,
                       [NO_WORKERS], outcome, reason))
    add(unservable("unservable_retries_exhausted_photondata",
                   "Every worker given PHOTONDATA event 7 was lost, up to router.max_attempts: silent "
                   "sends nothing, explicit sends SIM_FAILED with the id.", "RetriesExhausted", ev7_one, 7,
                   sim_failed(7), "retries_exhausted", "retries_exhausted"))
    add(unservable("unservable_engine_failure_photondata",
                   "The engine (or a worker) failed on well-formed PHOTONDATA event 7: silent sends "
                   "nothing, explicit sends SIM_FAILED with the id.", "SimulationFailed", ev7_one, 7,
                   sim_failed(7), "simulation_failed", "engine_failure"))

    # ---- envelopes (frames as the server's ROUTER socket receives them) --------------------------
    def envelope(name: str, ref: str, description: str, received: list[bytes], n_env: int,
                 reply_payload: list[bytes] | None, **extra: Any) -> dict[str, Any]:
        v: dict[str, Any] = {"name": name, "kind": "envelope", "ref": ref, "description": description,
                             "received": hexes(received), "envelope": hexes(received[:n_env]),
                             "payload": hexes(received[n_env:])}
        if reply_payload is not None:
            v["reply"] = hexes(received[:n_env] + reply_payload)
        v.update(extra)
        return v

    add(envelope("envelope_req_detector_info", "§2.4, §2.5",
                 "A REQ (or DEALER with delimiter) peer: identity, empty delimiter, request. The "
                 "reply repeats identity and delimiter before the DETECTOR_INFO frames.",
                 [IDENTITY, b"", DETECTOR_INFO], 2, None,
                 reply_prefix=hexes([IDENTITY, b"", DETECTOR_INFO]), reply_frames=7))
    add(envelope("envelope_dealer_no_delimiter", "§2.4, §2.5",
                 "A DEALER peer without delimiter: identity, then the header directly.",
                 [IDENTITY, PING], 1, [ACK]))
    add(envelope("envelope_req_empty_metadata", "§2.4, §6",
                 "REQ peer, PHOTONDATA with empty metadata: only the frame before the header is a "
                 "delimiter; the empty metadata stays payload.",
                 [IDENTITY, b"", PHOTONDATA, b"", *one], 2, [UNKNOWN_REQUEST]))
    add(envelope("envelope_dealer_empty_metadata", "§2.4, §6",
                 "DEALER peer without delimiter, PHOTONDATA with empty metadata: the empty frame "
                 "after the header is payload, never a delimiter.",
                 [IDENTITY, PHOTONDATA, b"", *one], 1, [UNKNOWN_REQUEST]))
    add(envelope("envelope_run_begin_empty_filename", "§2.4, §6",
                 "DEALER peer without delimiter, RUN_BEGIN with an empty filename frame.",
                 [IDENTITY, RUN_BEGIN, b""], 1, [ACK]))
    add(envelope("envelope_two_hops", "§2.4",
                 "Through a ROUTER/DEALER proxy: two identities, delimiter, request.",
                 [b"\x00proxy", IDENTITY, b"", PING], 3, [ACK]))
    add(envelope("envelope_delimiter_only", "§5.6, §6",
                 "A message that is only an envelope (DEALER sent one empty frame): "
                 "UNKNOWN_REQUEST.",
                 [IDENTITY, b""], 2, [UNKNOWN_REQUEST]))

    # ---- the ratpac-two client's validators (§1.4, §7.15) ----------------------------------------
    def client(name: str, description: str, request: str, reply: list[bytes], verdict: str,
               **extra: Any) -> dict[str, Any]:
        v: dict[str, Any] = {"name": name, "kind": "client_reply", "ref": "§8.1, §9",
                             "description": description, "request": request, "reply": hexes(reply),
                             "verdict": verdict}
        v.update(extra)
        return v

    hit = [u32(1), f32(1.0), f32(0.0), f32(0.0), f32(0.0), f32(0.0), f32(1.0), f32(400.0),
           f32(20.0), u32(SURFACE_DETECT | CHERENKOV)]
    add(client("client_accepts_ack", "PING answered ACK: accepted.", "PING", [ACK], "accept"))
    add(client("client_rejects_pong", "PING answered with the legacy PONG: rejected (retry loop, "
               "then Die).", "PING", [PONG], "reject"))
    add(client("client_accepts_sim_complete", "One hit on channel 1 for event 7: accepted, "
               "numPE 1.", "PHOTONDATA", [SIM_COMPLETE, u32(7), *hit], "accept", event_id=7,
               hits=1, n_channels=2))
    add(client("client_accepts_sim_complete_empty", "No hits (ten empty frames): accepted, "
               "numPE 0.", "PHOTONDATA", [SIM_COMPLETE, u32(9), *[b""] * 10], "accept",
               event_id=9, hits=0, n_channels=2))
    add(client("client_rejects_sim_complete_11_frames", "SIM_COMPLETE with 11 frames: rejected.",
               "PHOTONDATA", [SIM_COMPLETE, u32(7), *[b""] * 9], "reject", event_id=7))
    add(client("client_rejects_wrong_event_id", "SIM_COMPLETE echoing event 8 for event 7: "
               "rejected.", "PHOTONDATA", [SIM_COMPLETE, u32(8), *hit], "reject", event_id=7))
    add(client("client_accepts_sim_complete_async", "SIM_COMPLETE_ASYNC, 2 frames, id echoed: "
               "accepted with numPE 0 (charon never sends it).", "PHOTONDATA",
               [SIM_COMPLETE_ASYNC, u32(7)], "accept", event_id=7, hits=0))
    add(client("client_rejects_sim_complete_async_3_frames", "SIM_COMPLETE_ASYNC with 3 frames: "
               "rejected.", "PHOTONDATA", [SIM_COMPLETE_ASYNC, u32(7), b""], "reject", event_id=7))
    add(client("client_rejects_sim_failed", "SIM_FAILED: rejected and resent.", "PHOTONDATA",
               sim_failed(7), "reject", event_id=7))
    add(client("client_rejects_no_workers", "NO_WORKERS: rejected and resent.", "PHOTONDATA",
               [NO_WORKERS], "reject", event_id=7))
    add(client("client_rejects_unknown_request", "UNKNOWN_REQUEST: rejected and resent.",
               "PHOTONDATA", [UNKNOWN_REQUEST], "reject", event_id=7))
    add(client("client_crashes_on_ragged_hits", "Hit frames shorter than the channel frame: the "
               "client indexes past their end (std::out_of_range).", "PHOTONDATA",
               [SIM_COMPLETE, u32(7), u32(0, 1), *[f[:4] for f in [f32(1.0, 1.0)] * 8],
                u32(SURFACE_DETECT, SURFACE_DETECT)], "crash", event_id=7, n_channels=2))
    add(client("client_crashes_on_channel_out_of_range", "Channel id 2 with 2 channels: the "
               "client indexes its PMT map out of bounds.", "PHOTONDATA",
               [SIM_COMPLETE, u32(7), u32(2), *hit[1:]], "crash", event_id=7, n_channels=2))
    add(client("client_accepts_detector_info", "DETECTOR_INFO, 2 channels of float32 positions "
               "and int32 types: accepted.", "DETECTOR_INFO", p2, "accept", n_channels=2))
    add(client("client_detector_info_float64", "DETECTOR_INFO with float64 positions: the client "
               "reads 4 float32 values per axis for 2 PMTs, PMT COUNT MISMATCH, Die.",
               "DETECTOR_INFO",
               [DETECTOR_INFO, f64(1.5, -1000.0), f64(2.5, 0.0), f64(3.5, 12.5), i32(1, -1)],
               "die", n_channels=2))

    # ---- encodings and units (§7 preamble, §7.17) ------------------------------------------------
    values = [("f32", v) for v in (0.0, 1.0, -1.0, 0.5, 1.5, 2.5, 3.5, 12.5, 400.0, 420.0, -1000.0)]
    values += [("u32", v) for v in (0x400, 0x800, 0x404, 0x804, 7, 0xFFFFFFFF)]
    values += [("i32", v) for v in (1, -1)]
    pack = {"f32": f32, "u32": u32, "i32": i32}
    add({"name": "encodings", "kind": "encoding", "ref": "§3",
         "description": "Scalar encodings (little-endian, 4 bytes) and unit conversions the client "
                        "applies before sending.",
         "values": [{"dtype": d, "value": v, "hex": pack[d](v).hex()} for d, v in values],
         "units": [
             {"quantity": "wavelength", "input": "3.0996 eV photon", "energy_ev": 3.0996,
              "hc_ev_nm": 1239.84, "nm": 400.0, "tolerance_nm": 0.01},
             {"quantity": "time", "input": "12.5 ns", "ns": 12.5, "hex": f32(12.5).hex()},
             {"quantity": "length", "input": "1 m", "mm": 1000.0, "hex": f32(1000.0).hex()},
         ]})
    return out


def render(vector: dict[str, Any]) -> str:
    return json.dumps(vector, indent=1, ensure_ascii=False) + "\n"


README_HEAD = """\
# Golden vectors

Byte-level examples of the wire protocols, one JSON file per vector. They are normative together
with the spec they belong to, and the test suite holds the code to them.

Protocol v2 (spec: [../charon-v2.md](../charon-v2.md)) has its own index: [v2/README.md](v2/README.md).

## v1 (`v1/`, spec: [../charon-v1.md](../charon-v1.md), [../charon-v1.yaml](../charon-v1.yaml))

`v1/generate.py` writes these files using only `struct` (independent of charon's codec);
`tests/test_v1_vectors.py` fails if a file differs from what the script writes. Every frame is a
lowercase hex string (`""` is an empty frame). `ref` names the sections of the spec the vector illustrates.

| kind | fields | checked by |
|---|---|---|
| `exchange` | `request` (payload frames, no envelope); `decoded` (request type and fields, or the error class and event id); `reply` (exact frames) and/or `reply_shape` (`header`, `frames`, `event_id` echo, `hits_echo` = hits from the echo backend, `hits_max`, `hits_physical`); `roundtrip_frames` (leading request frames that decode -> encode reproduces byte for byte); `detector` (the reply bytes hold only for this detector); `server` (server settings the reply needs) | codec tests; a running `charon serve` via REQ, DEALER and DEALER without delimiter |
| `envelope` | `received` (frames as the server's ROUTER socket reads them); `envelope`, `payload` (the split); `reply` (exact frames sent back) or `reply_prefix` + `reply_frames` | `split_envelope`; a running server |
| `client_reply` | `request` (what was sent), `event_id`, `n_channels`, `reply`, `verdict` (`accept`, `reject` = resend, `die` = Log::Die, `crash` = out-of-bounds access in the client) | `check_*` validators; `tests/ratpac_client.py` |
| `error_reply` | `error` (charon.errors class), `event_id`, `reply` (the reply under `v1_failure_replies = explicit`) | the error tree |
| `unservable` | `error` (charon.errors class), `request`, `event_id`, and per policy (`explicit`, `silent`) the `reply` (null = none is sent) and the `outcome` label | `charon.protocol.unservable`; router and serve on every path |
| `encoding` | scalar `values` (dtype, value, hex) and `units` conversions | codec tests |

| vector | kind | ref | description |
|---|---|---|---|
"""


def main() -> int:
    all_vectors = vectors()
    names = [v["name"] for v in all_vectors]
    assert len(names) == len(set(names)), "duplicate vector name"
    check = "--check" in sys.argv
    stale = []
    for v in all_vectors:
        path = HERE / f"{v['name']}.json"
        text = render(v)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    readme = README_HEAD + "".join(
        f"| [`{v['name']}`](v1/{v['name']}.json) | {v['kind']} | {v['ref']} | "
        f"{v['description'].replace('|', '/')} |\n" for v in all_vectors
    )
    readme_path = HERE.parent / "README.md"
    if check:
        if not readme_path.exists() or readme_path.read_text() != readme:
            stale.append(readme_path.name)
    else:
        readme_path.write_text(readme)
    extra = sorted({p.stem for p in HERE.glob("*.json")} - set(names))
    if check and (stale or extra):
        sys.stderr.write(f"stale vectors: {stale}, unknown files: {extra}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
