"""The v1 golden vectors and the machine-readable spec, held against tokens.py and the codec.

Every vector in proto-spec/vectors/v1 is checked here without sockets: requests decode to the
recorded values and re-encode byte for byte, replies built by the codec (and by the request
handler that ``charon serve`` and the workers use) equal the recorded bytes or shape, envelopes
split as recorded, and the client-side validators give the recorded verdicts.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from charon import errors
from charon.engine.base import DetectorInfo, Hits, Photons
from charon.protocol import tokens, unservable, v1
from charon.service import RequestHandler
from charon.settings import RouterSettings, ServerSettings
from tests import golden
from tests import ratpac_client as rc

ROOT = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((ROOT / "proto-spec" / "charon-v1.yaml").read_text())
VECTOR_DIR = golden.VECTORS_ROOT / "v1"
VECTORS = golden.load("v1")
frames, as_bytes, ids = golden.frames, golden.as_bytes, golden.ids


def of_kind(kind: str) -> list[dict[str, Any]]:
    return golden.of_kind(VECTORS, kind)


EXCHANGES = of_kind("exchange")
ENVELOPES = of_kind("envelope")
CLIENT_REPLIES = of_kind("client_reply")


class FixedDetectorEcho:
    """A Simulator for the request handler: a given detector, one hit per photon (echo)."""

    name = "fixed-echo"
    fingerprint = "0" * 64

    def __init__(self, detector: dict[str, list[float]] | None = None) -> None:
        d = detector or {"x": [0.0], "y": [0.0], "z": [0.0], "type": [0]}
        self._info = DetectorInfo(np.array(d["x"], "<f4"), np.array(d["y"], "<f4"),
                                  np.array(d["z"], "<f4"), np.array(d["type"], "<i4"))

    def detector_info(self) -> DetectorInfo:
        return self._info

    def simulate(self, batch: Sequence[Photons]) -> list[Hits]:
        p = max(len(self._info), 1)
        return [Hits(np.arange(len(ev), dtype=np.uint32) % np.uint32(p), ev.dx, ev.dy, ev.dz, ev.polx,
                     ev.poly, ev.polz, ev.wavelength, ev.time,
                     ev.flags | np.uint32(tokens.Flag.SURFACE_DETECT))
                for ev in batch]


def codec_reply(payload: Sequence[v1.Frame], vector: dict[str, Any]) -> list[v1.Frame]:
    """The reply the codec's builders give for a request (no simulation: only exact-reply vectors)."""
    try:
        request = v1.decode_request(payload)
    except errors.ProtocolError as exc:
        return list(exc.reply())
    if isinstance(request, v1.Ping):
        return [tokens.PONG] if vector.get("server", {}).get("legacy_pong") else v1.ack()
    if isinstance(request, v1.RunBegin | v1.RunEnd):
        return v1.ack()
    if isinstance(request, v1.DetectorInfoRequest):
        d = vector["detector"]
        info = DetectorInfo(np.array(d["x"], "<f4"), np.array(d["y"], "<f4"), np.array(d["z"], "<f4"),
                            np.array(d["type"], "<i4"))
        return v1.detector_info(*info.frames())
    assert request.n_photons == 0, "only zero-photon events have a simulation-free reply"
    return v1.empty_sim_complete(request.event_id)


def check_shape(reply: Sequence[v1.Frame], shape: dict[str, Any]) -> None:
    """A reply matches a vector's reply_shape (header, frame count, event id echo, hit frames)."""
    got = as_bytes(reply)
    assert got[0] == shape["header"].encode()
    assert len(got) == shape["frames"]
    if shape["header"] == "SIM_COMPLETE":
        assert got[1] == bytes.fromhex(shape["event_id"])
        lengths = {len(f) for f in got[2:]}
        assert len(lengths) == 1, f"hit frames differ in length: {lengths}"
        assert lengths.pop() // 4 <= shape["hits_max"]


# ---- the yaml spec against tokens.py --------------------------------------------------------------


def test_every_yaml_token_equals_tokens_module() -> None:
    t = SPEC["tokens"]
    for group in ("requests", "replies"):
        for name, entry in t[group].items():
            value = getattr(tokens, name)
            assert value == bytes.fromhex(entry["hex"]) == name.encode("ascii"), name
    assert bytes.fromhex(t["router_worker"]["READY"]["hex"]) == tokens.PPP_READY
    assert bytes.fromhex(t["router_worker"]["HEARTBEAT"]["hex"]) == tokens.PPP_HEARTBEAT
    assert {bytes.fromhex(e["hex"]) for e in t["requests"].values()} == tokens.REQUEST_HEADERS


def test_every_token_in_tokens_module_is_in_yaml() -> None:
    in_yaml = {bytes.fromhex(e["hex"]) for g in ("requests", "replies") for e in SPEC["tokens"][g].values()}
    in_module = {v for k, v in vars(tokens).items() if k.isupper() and isinstance(v, bytes)
                 and not k.startswith("PPP_")}
    assert in_module == in_yaml


def test_tokens_are_distinct_and_never_router_worker_bytes() -> None:
    all_tokens = [e["hex"] for g in ("requests", "replies") for e in SPEC["tokens"][g].values()]
    replies_only = [e["hex"] for n, e in SPEC["tokens"]["replies"].items() if n != "DETECTOR_INFO"]
    requests = [e["hex"] for e in SPEC["tokens"]["requests"].values()]
    assert not set(replies_only) & set(requests)
    assert len(set(replies_only)) == len(replies_only)
    assert not {"01", "02"} & set(all_tokens)


def test_flags_equal_flag_enum() -> None:
    assert SPEC["flags"] == {f.name: int(f.value) for f in tokens.Flag}
    terminal = tokens.Flag(0)
    for name in SPEC["terminal_flags"]:
        terminal |= tokens.Flag[name]
    assert terminal == tokens.TERMINAL_FLAGS
    origin = tokens.Flag(0)
    for name in SPEC["origin_flags"]:
        origin |= tokens.Flag[name]
    assert origin == tokens.ORIGIN_FLAGS


def test_frame_counts_and_field_orders_equal_tokens_module() -> None:
    req, rep = SPEC["requests"], SPEC["replies"]
    assert req["PHOTONDATA"]["frames"] == len(req["PHOTONDATA"]["layout"]) == tokens.PHOTONDATA_FRAMES
    assert rep["SIM_COMPLETE"]["frames"] == len(rep["SIM_COMPLETE"]["layout"]) == tokens.SIM_COMPLETE_FRAMES
    assert rep["DETECTOR_INFO"]["frames"] == len(rep["DETECTOR_INFO"]["layout"]) == tokens.DETECTOR_INFO_FRAMES
    assert tuple(f["name"] for f in req["PHOTONDATA"]["layout"][2:]) == tokens.PHOTON_FIELDS
    assert tuple(f["name"] for f in rep["SIM_COMPLETE"]["layout"][2:]) == tokens.HIT_FIELDS
    assert req["PHOTONDATA"]["layout"][1]["length"] == str(tokens.METADATA_BYTES)
    for group in (req, rep):
        for name, entry in group.items():
            assert entry["frames"] == len(entry["layout"]), name
            assert entry["layout"][0]["token"] == name, name
            for f in entry["layout"][1:]:
                assert f.get("dtype") in (None, *SPEC["dtypes"]), (name, f)


def test_photon_and_hit_dtypes_match_engine_containers() -> None:
    """The yaml dtypes are what Photons/Hits/DetectorInfo put on the wire."""
    dt = {k: np.dtype(v["numpy"]) for k, v in SPEC["dtypes"].items()}
    p = Photons.from_arrays(1, np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3)), 400.0, 0.0, 0)
    for f in SPEC["requests"]["PHOTONDATA"]["layout"][2:]:
        assert getattr(p, f["name"]).dtype == dt[f["dtype"]], f["name"]
    h = Hits.empty()
    for f in SPEC["replies"]["SIM_COMPLETE"]["layout"][2:]:
        assert getattr(h, f["name"]).dtype.kind == dt[f["dtype"]].kind, f["name"]
    info = FixedDetectorEcho().detector_info()
    for f, a in zip(SPEC["replies"]["DETECTOR_INFO"]["layout"][1:], info.frames(), strict=True):
        assert np.frombuffer(a, dt[f["dtype"]]).size == 1


def test_every_vector_is_named_in_the_yaml_and_every_name_exists() -> None:
    named: set[str] = set()
    for case in SPEC["cases"]:
        named.update(case["vectors"])
    named.update(SPEC["envelope"]["vectors"])
    named.update(SPEC["client"]["vectors"])
    named.update(SPEC["encoding_vectors"])
    named.update(SPEC["unservable"]["vectors"])
    assert named == set(VECTORS), (named - set(VECTORS), set(VECTORS) - named)


@pytest.mark.parametrize("case", SPEC["cases"], ids=lambda c: c["input"][:40])
def test_yaml_cases_agree_with_their_vectors(case: dict[str, Any]) -> None:
    for name in case["vectors"]:
        v = VECTORS[name]
        if "reply" in v:
            reply = frames(v["reply"])[len(v.get("envelope", [])):]
            header, n = reply[0].decode(), len(reply)
        else:
            header, n = v["reply_shape"]["header"], v["reply_shape"]["frames"]
        assert header == case["reply"], name
        assert n == SPEC["replies"][case["reply"]]["frames"], name
        if "error" in v.get("decoded", {}):
            assert case["outcome"] == getattr(errors, v["decoded"]["error"]).outcome, name
        elif v["kind"] == "error_reply":
            assert case["outcome"] == getattr(errors, v["error"]).outcome


def test_vector_files_and_index_are_what_the_generator_writes() -> None:
    golden.check_generated("v1", VECTORS, VECTOR_DIR.parent / "README.md", "v1/")


# ---- exchange vectors ----------------------------------------------------------------------------


@pytest.mark.parametrize("vector", EXCHANGES, ids=ids(EXCHANGES))
def test_request_decodes_as_recorded(vector: dict[str, Any]) -> None:
    payload = frames(vector["request"])
    expected = vector["decoded"]
    if "error" in expected:
        with pytest.raises(getattr(errors, expected["error"])) as info:
            v1.decode_request(payload)
        if expected["error"] == "MalformedRequest":
            assert isinstance(info.value, errors.MalformedRequest)
            assert info.value.event_id == expected["event_id"]
        return
    request = v1.decode_request(payload)
    assert type(request).__name__ == expected["type"]
    for key, value in expected.items():
        if key != "type":
            assert getattr(request, key) == value, key


ROUNDTRIP = [v for v in EXCHANGES if "roundtrip_frames" in v]


@pytest.mark.parametrize("vector", ROUNDTRIP, ids=ids(ROUNDTRIP))
def test_decode_encode_round_trip_is_byte_exact(vector: dict[str, Any]) -> None:
    payload = frames(vector["request"])
    encoded = as_bytes(v1.encode_request(v1.decode_request(payload)))
    assert encoded == payload[: vector["roundtrip_frames"]]


PHOTON_VECTORS = [v for v in ROUNDTRIP if v["decoded"]["type"] == "PhotonData"]


@pytest.mark.parametrize("vector", PHOTON_VECTORS, ids=ids(PHOTON_VECTORS))
def test_photondata_rebuilt_from_numpy_views_is_byte_exact(vector: dict[str, Any]) -> None:
    payload = frames(vector["request"])
    request = v1.decode_request(payload)
    assert isinstance(request, v1.PhotonData)
    photons = Photons.from_request(request)
    rebuilt = [tokens.PHOTONDATA, photons.metadata(), *as_bytes(photons.frames())]
    assert rebuilt == payload[:14]
    assert len(photons) == request.n_photons == vector["decoded"]["n_photons"]
    assert photons.event_id == vector["decoded"]["event_id"]


def test_event7_values_are_the_documented_photons() -> None:
    request = v1.decode_request(frames(VECTORS["photondata_event7"]["request"]))
    assert isinstance(request, v1.PhotonData)
    p = Photons.from_request(request)
    np.testing.assert_array_equal(np.stack([p.x, p.y, p.z], 1), [[0, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(np.stack([p.dx, p.dy, p.dz], 1), [[1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(np.stack([p.polx, p.poly, p.polz], 1), [[0, 0, 1], [0, 0, 1]])
    np.testing.assert_array_equal(p.wavelength, [400.0, 420.0])
    np.testing.assert_array_equal(p.time, [0.0, 1.0])
    assert list(p.flags) == [tokens.Flag.CHERENKOV, tokens.Flag.SCINTILLATION]
    assert sum(len(f) for f in frames(VECTORS["photondata_event7"]["request"])) == 114


EXACT = [v for v in EXCHANGES if "reply" in v]


@pytest.mark.parametrize("vector", EXACT, ids=ids(EXACT))
def test_codec_builds_the_recorded_reply(vector: dict[str, Any]) -> None:
    assert as_bytes(codec_reply(frames(vector["request"]), vector)) == frames(vector["reply"])


@pytest.mark.parametrize("vector", EXCHANGES, ids=ids(EXCHANGES))
def test_request_handler_answers_as_recorded(vector: dict[str, Any]) -> None:
    """The sans-IO handler behind ``charon serve`` and the workers, with an echo engine."""
    handler = RequestHandler(FixedDetectorEcho(vector.get("detector")),
                             legacy_pong=bool(vector.get("server", {}).get("legacy_pong")))
    answer = handler.handle(frames(vector["request"]))
    if "reply" in vector:
        assert as_bytes(answer.reply) == frames(vector["reply"])
    check_shape(answer.reply, vector["reply_shape"])
    shape = vector["reply_shape"]
    if "hits_echo" in shape:
        assert len(answer.reply[2]) // 4 == shape["hits_echo"]
        v1.check_sim_complete(answer.reply, vector["decoded"]["event_id"], n_channels=1)
    if "error" in vector["decoded"]:
        assert answer.outcome == getattr(errors, vector["decoded"]["error"]).outcome
    else:
        assert answer.outcome == "ok"


SIMULATED = [v for v in EXCHANGES if v["reply_shape"]["header"] == "SIM_COMPLETE" and "reply" not in v]


@pytest.mark.parametrize("vector", SIMULATED, ids=ids(SIMULATED))
def test_sim_complete_shape_vectors_describe_valid_client_replies(vector: dict[str, Any]) -> None:
    """A reply of the recorded shape is accepted by the ratpac-two rules, and a wrong echo is not."""
    request = v1.decode_request(frames(vector["request"]))
    assert isinstance(request, v1.PhotonData)
    hits = FixedDetectorEcho().simulate([Photons.from_request(request)])[0]
    reply = as_bytes(v1.sim_complete(request.event_id, hits.frames()))
    check_shape(reply, vector["reply_shape"])
    assert rc.validate_photondata(reply, request.event_id) == reply[2:12]
    with pytest.raises(rc.Rejected):
        rc.validate_photondata(reply, request.event_id ^ 1)


def test_error_reply_vector_is_the_error_tree() -> None:
    v = VECTORS["sim_failed_engine_error"]
    for cls in (errors.SimulationFailed, errors.RetriesExhausted):
        assert cls("engine raised", v["event_id"]).reply() == frames(v["reply"])
    assert errors.SimulationFailed("x", 7).outcome == "simulation_failed"


UNSERVABLE = of_kind("unservable")


@pytest.mark.parametrize("vector", UNSERVABLE, ids=ids(UNSERVABLE))
def test_unservable_vector_is_what_the_policy_decides(vector: dict[str, Any]) -> None:
    error = getattr(errors, vector["error"])("cannot serve", vector["event_id"])
    decoded = v1.decode_request(frames(vector["request"]))
    assert isinstance(decoded, (v1.PhotonData, v1.DetectorInfoRequest)), "only well-formed requests"
    for policy in ("explicit", "silent"):
        verdict = unservable.decide(error, policy)  # type: ignore[arg-type]
        expected = vector[policy]["reply"]
        assert (None if verdict.reply is None else [bytes(v1.as_view(f)) for f in verdict.reply]) == (
            None if expected is None else frames(expected)), policy
        assert verdict.outcome == vector[policy]["outcome"], policy
    for section in (RouterSettings, ServerSettings):
        assert section.model_fields["v1_failure_replies"].default == SPEC["unservable"]["default"] == "silent"


@pytest.mark.parametrize("vector", UNSERVABLE, ids=ids(UNSERVABLE))
def test_every_explicit_failure_reply_is_one_the_client_rejects(vector: dict[str, Any]) -> None:
    """Why silent is the default: the ratpac-two client model rejects each explicit reply."""
    reply = frames(vector["explicit"]["reply"])
    request = frames(vector["request"])
    validate: Any = ((lambda r: rc.validate_photondata(r, vector["event_id"])) if request[0] == tokens.PHOTONDATA
                     else rc.validate_detector_info)
    with pytest.raises(rc.Rejected):
        validate(reply)
    known = {bytes.fromhex(h) for v in (VECTORS["client_rejects_no_workers"], VECTORS["sim_failed_engine_error"])
             for h in v["reply"][:1]}
    assert reply[0] in known, "explicit replies are the ones the existing vectors record"


# ---- envelopes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", ENVELOPES, ids=ids(ENVELOPES))
def test_envelope_split_and_reply(vector: dict[str, Any]) -> None:
    received = frames(vector["received"])
    envelope, payload = v1.split_envelope(received)
    assert as_bytes(envelope) == frames(vector["envelope"])
    assert as_bytes(payload) == frames(vector["payload"])
    handler = RequestHandler(FixedDetectorEcho())
    reply = as_bytes([*envelope, *handler.handle(payload).reply])
    if "reply" in vector:
        assert reply == frames(vector["reply"])
    else:
        prefix = frames(vector["reply_prefix"])
        assert reply[: len(prefix)] == prefix
        assert len(reply) == vector["reply_frames"]


@pytest.mark.parametrize("vector", ENVELOPES, ids=ids(ENVELOPES))
def test_envelope_split_works_on_memoryviews(vector: dict[str, Any]) -> None:
    received = [memoryview(bytearray(f)) for f in frames(vector["received"])]
    envelope, payload = v1.split_envelope(received)
    assert as_bytes(envelope) == frames(vector["envelope"])
    assert as_bytes(payload) == frames(vector["payload"])


# ---- the client's validators ---------------------------------------------------------------------


def ratpac_verdict(vector: dict[str, Any]) -> str:
    """What the ratpac-two client model does with the reply."""
    reply = frames(vector["reply"])
    try:
        if vector["request"] == "PHOTONDATA":
            hit_frames = rc.validate_photondata(reply, vector["event_id"])
            pes = rc.write_pes(hit_frames, vector["event_id"], list(range(vector.get("n_channels", 2))))
            assert pes.num_pe == vector.get("hits", pes.num_pe)
        elif vector["request"] == "DETECTOR_INFO":
            x, y, z = rc.validate_detector_info(reply)
            rc.match_pmts(np.stack([x, y, z], 1), np.zeros((vector["n_channels"], 3)))
        else:
            rc.validate_ack(reply)
    except rc.Rejected:
        return "reject"
    except rc.ClientDied:
        return "die"
    except rc.ClientCrash:
        return "crash"
    return "accept"


@pytest.mark.parametrize("vector", CLIENT_REPLIES, ids=ids(CLIENT_REPLIES))
def test_ratpac_client_model_gives_recorded_verdict(vector: dict[str, Any]) -> None:
    if vector["name"] == "client_accepts_detector_info":
        reply = frames(vector["reply"])
        x, y, z = rc.validate_detector_info(reply)
        ids_, unmatched = rc.match_pmts(np.stack([x, y, z], 1), np.stack([x, y, z], 1)[::-1])
        assert ids_ == [1, 0]
        assert unmatched == []
        return
    assert ratpac_verdict(vector) == vector["verdict"]


@pytest.mark.parametrize("vector", CLIENT_REPLIES, ids=ids(CLIENT_REPLIES))
def test_codec_validators_accept_exactly_the_safe_replies(vector: dict[str, Any]) -> None:
    """charon's own validators accept what the client accepts, and reject what would crash it."""
    reply = frames(vector["reply"])
    accepted = True
    try:
        if vector["request"] == "PHOTONDATA":
            if v1.header_of(reply) == tokens.SIM_COMPLETE_ASYNC:
                v1.check_sim_complete_async(reply, vector["event_id"])
            else:
                done = v1.check_sim_complete(reply, vector["event_id"], n_channels=vector.get("n_channels"))
                assert done.n_hits == vector.get("hits", done.n_hits)
        elif vector["request"] == "DETECTOR_INFO":
            assert v1.check_detector_info(reply).n_channels == vector["n_channels"]
        else:
            v1.check_ack(reply)
    except v1.InvalidReply:
        accepted = False
    assert accepted == (vector["verdict"] == "accept")


# ---- encodings -----------------------------------------------------------------------------------


def test_scalar_encodings_and_units() -> None:
    v = VECTORS["encodings"]
    dt = {k: np.dtype(e["numpy"]) for k, e in SPEC["dtypes"].items()}
    for item in v["values"]:
        assert np.array(item["value"], dtype=dt[item["dtype"]]).tobytes().hex() == item["hex"], item
        assert struct.calcsize("<I") == SPEC["dtypes"][item["dtype"]]["size"]
    units = {u["quantity"]: u for u in v["units"]}
    wl = units["wavelength"]
    assert math.isclose(wl["hc_ev_nm"] / wl["energy_ev"], wl["nm"], abs_tol=wl["tolerance_nm"])
    assert np.float32(units["time"]["ns"]).tobytes().hex() == units["time"]["hex"]
    assert np.float32(units["length"]["mm"]).tobytes().hex() == units["length"]["hex"]
