"""charon's configuration: one frozen pydantic-settings tree, the single source of truth.

Every command reads the same :class:`Settings`. Values come, in rising priority, from defaults,
the environment (``CHARON_<SECTION>__<FIELD>``, e.g. ``CHARON_ROUTER__QUEUE_DEADLINE_S=60``) and
command-line flags. ``charon config`` prints the effective tree and ``make schema`` turns the same
models into the Helm chart's ``values.schema.json``, so the chart cannot drift from the code.

A field that has a command-line flag declares it here, once, in its annotation
(``Annotated[int, Flag("--seed", ENGINE_COMMANDS, "N")]``): name, the commands that take it, and a
metavar. The CLI generates argparse from these declarations (:func:`flags`), and error messages
name the flag and the environment variable of a setting (:func:`describe_setting`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from charon.errors import ConfigError
from charon.protocol.unservable import FailureReplies

#: Every command (e.g. ``--log-level``).
ALL_COMMANDS: Final = ("*",)
#: Commands that build a photon engine (and ``config``, which shows every setting).
ENGINE_COMMANDS: Final = ("serve", "worker", "demo", "config", "flukaio-gateway")
#: Commands that serve /metrics, /healthz and /readyz.
METRICS_COMMANDS: Final = ("serve", "router", "worker", "config", "flukaio-gateway")
#: Commands that read a detector file, GDML import settings included.
DETECTOR_COMMANDS: Final = (*ENGINE_COMMANDS, "detector")
#: Commands that talk v1 to a server through the client library.
CLIENT_COMMANDS: Final = ("ping", "info", "simulate", "config")
#: Commands that bind a client-facing CURVE server socket.
CURVE_SERVER_COMMANDS: Final = ("serve", "router", "config")
#: Commands that connect to a CURVE server: the v1 clients, the worker and the gateway's upstream.
CURVE_CLIENT_COMMANDS: Final = (*CLIENT_COMMANDS, "worker", "flukaio-gateway")


@dataclass(frozen=True, slots=True)
class Flag:
    """The command-line flag of the settings field it annotates.

    ``commands`` are the commands that take it (``ALL_COMMANDS`` = every one). Several fields may
    declare the same flag for one command (``config --bind`` sets ``server.bind`` and
    ``router.bind``). A ``bool`` field's flag takes no value and sets it to true; a ``Literal``
    field's flag accepts only its values. The help text is the field's description.
    """

    name: str
    commands: tuple[str, ...]
    metavar: str | None = None

    def applies_to(self, command: str) -> bool:
        return self.commands == ALL_COMMANDS or command in self.commands


def _port_in_range(value: str) -> str:
    """TCP ports are 16 bits; ZeroMQ would silently bind a larger number modulo 65536."""
    if value.startswith(("ipc://", "inproc://")):
        return value
    port = value.rsplit(":", 1)[-1]
    if port.isdigit() and int(port) > 65535:
        raise ValueError(f"port above 65535 (got {port})")
    return value


def parse_networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``"10.0.0.0/8, ::1"`` -> the networks (a bare address is a /32 or /128); raises ValueError."""
    networks = []
    for item in value.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IPv4 or IPv6 network (e.g. 10.0.0.0/8 or ::1/128)") from None
    return tuple(networks)


def _networks(value: str) -> str:
    parse_networks(value)
    return value


_ENDPOINT_PATTERN = r"^(tcp://(\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\*|[0-9]{1,5})|ipc://.+|inproc://.+)$"
_HOSTPORT_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]*):[0-9]{1,5}$"
_FINGERPRINT_PATTERN = r"^[0-9a-f]{64}$"
#: What a value must look like, for error messages: pydantic would print the regular expression.
_PATTERN_HINTS = {
    _ENDPOINT_PATTERN: "a ZeroMQ endpoint such as tcp://*:5555, tcp://HOST:6667, tcp://[::1]:5555 "
                       "or ipc:///PATH",
    _HOSTPORT_PATTERN: "HOST:PORT, e.g. :9100, 127.0.0.1:0 or [::1]:9100",
    _FINGERPRINT_PATTERN: "a detector fingerprint: 64 lowercase hex digits (sha256)",
}

Endpoint = Annotated[
    str,
    Field(
        pattern=_ENDPOINT_PATTERN,
        description="ZeroMQ endpoint, e.g. tcp://*:5555, tcp://host:6667 or ipc:///tmp/charon.sock",
    ),
    AfterValidator(_port_in_range),
]
HostPort = Annotated[
    str,
    Field(
        pattern=_HOSTPORT_PATTERN,
        description="HOST:PORT for an HTTP listener; port 0 picks a free port; empty host = all",
    ),
    AfterValidator(_port_in_range),
]


#: ``server.v1_failure_replies`` and ``router.v1_failure_replies``: one flag for serve and router.
_FAILURE_REPLIES_DESCRIPTION = (
    "A well-formed v1 PHOTONDATA or DETECTOR_INFO that cannot be served (queue full, deadline "
    "passed, no workers, workers lost, engine failure): silent = no reply (the client's retry "
    "limit ends the event; counted as outcome dropped_<reason>), explicit = ChAR0N's NO_WORKERS / "
    "SIM_FAILED, which the ratpac-two client rejects and may resend forever"
)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LogSettings(_Section):
    """Logging."""

    level: Annotated[Literal["debug", "info", "warning", "error"], Flag("--log-level", ALL_COMMANDS)] = Field(
        "info", description="Log level: debug logs one line per request"
    )


class MetricsSettings(_Section):
    """Prometheus metrics and the /healthz, /readyz endpoints."""

    addr: Annotated[HostPort | None, Flag("--metrics-addr", METRICS_COMMANDS, "HOST:PORT")] = Field(
        None,
        description="HOST:PORT of the metrics/health HTTP server; unset = the role's default "
        "(router and serve :9100, worker and gateway :0, i.e. a free port that is logged)",
    )
    enabled: bool = Field(True, description="Serve metrics and health endpoints at all")
    threads: int = Field(
        4, ge=1, le=256, description="Threads answering HTTP requests (a fixed pool: an idle connection "
        "costs no thread of its own)"
    )
    max_waiting: int = Field(
        64, ge=1, le=100_000, description="Accepted HTTP connections waiting (without a thread) for their "
        "request; beyond it the one that has waited longest is closed"
    )
    idle_timeout_s: float = Field(
        5.0, gt=0, le=3600, description="An HTTP connection that sends nothing for this long is closed"
    )


class HeartbeatSettings(_Section):
    """Router <-> worker heartbeating; router and workers must agree."""

    interval_s: float = Field(1.0, gt=0, le=60, description="Seconds between heartbeats")
    liveness: int = Field(3, ge=2, le=100, description="Missed heartbeats before a peer is dead")


class EngineSettings(_Section):
    """The photon engine a server or worker runs."""

    backend: Annotated[Literal["builtin", "numpy", "echo", "chroma"], Flag("--backend", ENGINE_COMMANDS)] = Field(
        "builtin", description="Simulation backend: builtin (Warp engine), numpy (reference), "
        "echo (no physics, one hit per photon), chroma (GPU)"
    )
    detector: Annotated[Path | None, Flag("--detector", ENGINE_COMMANDS, "PATH")] = Field(
        None, description="Detector: a charon .npz, or a Geant4/RAT-PAC .gdml imported at start-up (with "
        "engine.ratdb or engine.pmt_volume); unset = the built-in reference detector"
    )
    seed: Annotated[int, Flag("--seed", ENGINE_COMMANDS, "N")] = Field(0, ge=0, le=2**63 - 1, description="Random seed; results depend only on "
                      "(seed, event id, photon index)")
    max_steps: Annotated[int, Flag("--max-steps", ENGINE_COMMANDS, "N")] = Field(1000, ge=1, le=1_000_000, description="Propagation steps per photon")
    echo_delay_s: Annotated[float, Flag("--echo-delay", ENGINE_COMMANDS, "SECONDS")] = Field(0.0, ge=0, le=3600, description="echo backend: sleep per request")
    device: Annotated[Literal["cpu", "cuda", "auto"], Flag("--device", ENGINE_COMMANDS)] = Field("auto", description="builtin backend device")
    cuda_device: Annotated[int, Flag("--cuda-device", ENGINE_COMMANDS, "N")] = Field(0, ge=0, le=63, description="CUDA device index (builtin, chroma)")
    threads: Annotated[int, Flag("--threads", ENGINE_COMMANDS, "N")] = Field(0, ge=0, le=256, description="CPU threads for the builtin engine; 0 = all cores")
    chunk_photons: int = Field(
        1_000_000, ge=1000, le=100_000_000, description="Photons per engine launch (bounds memory)"
    )
    kernel_cache_dir: Path | None = Field(
        None, description="Compiled-kernel cache directory (must be writable); unset = the engine's default"
    )
    ratdb: Annotated[Path | None, Flag("--ratdb", DETECTOR_COMMANDS, "PATH")] = Field(
        None, description="RATDB file with PMTINFO (RAT's JSON dump or a .ratdb text file) for a GDML "
        "detector: channel k is PMTINFO entry k (every backend)"
    )
    pmt_volume: Annotated[str | None, Flag("--pmt-volume", DETECTOR_COMMANDS, "REGEX")] = Field(
        None, max_length=1000, description="GDML detector without PMTINFO: regular expression naming the PMT "
        "logical volumes; channels follow placement order"
    )
    world: Annotated[str | None, Flag("--world", DETECTOR_COMMANDS, "NAME")] = Field(
        None, max_length=1000, description="GDML detector: the logical volume to use as the world "
        "(default: the file's <setup>)"
    )
    chord_mm: Annotated[float, Flag("--chord", DETECTOR_COMMANDS, "MM")] = Field(
        0.5, gt=0, le=100, description="GDML detector: largest distance (mm) between a curved surface and "
        "its triangles"
    )
    detector_cache_dir: Annotated[Path | None, Flag("--detector-cache-dir", DETECTOR_COMMANDS, "DIR")] = Field(
        None, description="Where imported GDML detectors are cached (keyed by the inputs' sha256); "
        "unset = $XDG_CACHE_HOME/charon/detectors"
    )
    batch_max_photons: int = Field(
        2_000_000, ge=1, le=1_000_000_000, description="Batching: photon budget of one engine pass"
    )
    batch_max_delay_s: float = Field(
        0.0, ge=0, le=10, description="Batching: longest wait for more requests to fill a pass"
    )
    stall_timeout_s: float = Field(
        300.0, ge=0, le=86_400, description="Liveness: /healthz fails once one engine pass has run "
        "longer than this (the process is then restarted); 0 = never"
    )


#: Bytes per photon in a PHOTONDATA (twelve 4-byte arrays): the photon limit follows the byte limit.
PHOTON_BYTES: Final = 48


class LimitsSettings(_Section):
    """Bounds on what a client can make ``charon serve`` or ``charon router`` hold."""

    max_request_bytes: int = Field(
        1024**3, ge=1024**2, le=2**40, description="Largest request accepted on a client-facing socket "
        "(bytes); photons per request are limited to a 48th of it, and each frame to a twelfth "
        "(ZMQ_MAXMSGSIZE: a larger frame closes the connection before it is buffered). Over it: v1 "
        "gets no reply (counted as dropped_too_large)"
    )
    client_send_hwm: int = Field(
        1000, ge=1, le=10_000_000, description="Replies queued for one client connection that does not "
        "read them (ZMQ_SNDHWM) before further replies to it are dropped and counted"
    )
    client_receive_hwm: int = Field(
        100, ge=1, le=1_000_000, description="Requests read ahead from one client connection (ZMQ_RCVHWM); "
        "beyond it the connection is not read until they are handled (back-pressure, nothing is dropped)"
    )
    max_client_connections: int = Field(
        4096, ge=1, le=1_000_000, description="Client connections held at once; a connection beyond it "
        "is closed at once and logged"
    )

    @property
    def max_request_photons(self) -> int:
        """Photons per PHOTONDATA: as many as ``max_request_bytes`` holds."""
        return self.max_request_bytes // PHOTON_BYTES

    @property
    def max_frame_bytes(self) -> int:
        """ZMQ_MAXMSGSIZE of a client-facing socket: the largest photon array frame of a request at
        the byte limit (twelve such frames are the whole request)."""
        return 4 * self.max_request_photons


class ServerSettings(_Section):
    """``charon serve``: one process, simulates requests itself."""

    bind: Annotated[Endpoint, Flag("--bind", ("serve", "config"), "ENDPOINT")] = Field(
        "tcp://*:5555", description="Client-facing endpoint")
    legacy_pong: Annotated[bool, Flag("--legacy-pong", ("serve", "config"))] = Field(False, description="Answer PING with PONG (pre-2024 clients only)")
    v1_failure_replies: Annotated[FailureReplies, Flag("--v1-failure-replies", ("serve", "config"))] = Field(
        "silent", description=_FAILURE_REPLIES_DESCRIPTION)


class RouterSettings(_Section):
    """``charon router``: queues client requests and load-balances them over workers."""

    bind: Annotated[Endpoint, Flag("--bind", ("router", "config"), "ENDPOINT")] = Field(
        "tcp://*:5555", description="Client-facing endpoint")
    workers_bind: Annotated[Endpoint, Flag("--workers-bind", ("router", "config"), "ENDPOINT")] = Field(
        "tcp://*:6667", description="Worker-facing endpoint")
    queue_max_requests: int = Field(10_000, ge=1, le=10_000_000, description="Queue bound in requests")
    queue_max_bytes: int = Field(
        2 * 1024**3, ge=1024, le=2**50, description="Queue bound in bytes of request frames"
    )
    queue_deadline_s: float = Field(
        300.0, gt=0, le=86_400, description="Longest wait in the queue before NO_WORKERS"
    )
    max_attempts: int = Field(
        3, ge=1, le=100, description="Workers a request may be given (lost workers) before SIM_FAILED"
    )
    dedup_window_s: float = Field(
        60.0, ge=0, le=3600, description="How long a completed reply answers identical resends; 0 = off"
    )
    dedup_max_bytes: int = Field(
        512 * 1024**2, ge=0, le=2**50, description="Memory bound of the completed-reply cache"
    )
    execution_deadline_s: float = Field(
        0.0, ge=0, le=86_400, description="Longest a worker may hold a request before it is taken back and "
        "given to another worker (router.max_attempts applies); its late reply is dropped; 0 = off"
    )
    deadline_expel_after: int = Field(
        2, ge=1, le=1000, description="Execution deadlines a worker may miss in a row (no reply in time "
        "between them) before the router expels it (DISCONNECT deadline)"
    )
    fingerprint: str | None = Field(
        None, pattern=_FINGERPRINT_PATTERN, description="Accept only workers with this detector fingerprint"
    )
    accept_legacy_workers: bool = Field(
        True, description="Accept ChAR0N workers (bare one-byte READY) as capacity-1 workers"
    )
    v1_failure_replies: Annotated[FailureReplies, Flag("--v1-failure-replies", ("router", "config"))] = Field(
        "silent", description=_FAILURE_REPLIES_DESCRIPTION)


class V2Settings(_Section):
    """Protocol v2 on the client port of ``charon serve`` and ``charon router``: credit and limits."""

    credit: int = Field(
        512, ge=1, le=1_000_000, description="Events a v2 client may have sent and not yet had answered"
    )
    max_events_per_message: int = Field(256, ge=1, le=1_000_000, description="Events in one SIMULATE message")
    max_photons_per_message: int = Field(
        4_194_304, ge=1, le=2**31, description="Photons in one SIMULATE message (48 bytes each)"
    )
    job_max_photons: int = Field(
        65_536, ge=1, le=1_000_000_000,
        description="Photons per engine job a SIMULATE is cut into (a larger event is a job of its own)",
    )
    max_sessions: int = Field(
        4096, ge=1, le=10_000_000, description="v2 sessions remembered; the least recently used idle ones go first"
    )


class RunSettings(_Section):
    """v1 async mode: PHOTONDATA answered at once, hits written to one ROOT file per run."""

    async_mode: Annotated[bool, Flag("--async-mode", ("serve", "router", "config"))] = Field(
        False, description="ChAR0N's async mode: RUN_BEGIN opens a run file, PHOTONDATA is answered "
        "SIM_COMPLETE_ASYNC at once and its hits are written to the file (router: by the worker "
        "that owns the run)")
    outdir: Annotated[Path | None, Flag("--outdir", ("serve", "worker", "config"), "DIR")] = Field(
        None, description="Directory run files are written in (serve in async mode, and workers that "
        "take runs); RUN_BEGIN names are confined to it")
    allow_absolute: bool = Field(
        False, description="Honour an absolute RUN_BEGIN filename (else only its last component is used, "
        "inside runs.outdir): any client could otherwise write anywhere the server may")
    flush_events: int = Field(
        500, ge=1, le=1_000_000, description="Events simulated, appended and fsynced per batch (ChAR0N: "
        "500); PHOTONDATA replies wait once twice this many are not yet written")
    flush_bytes: int = Field(
        256 * 1024**2, ge=1024, le=2**40, description="Photon bytes that also end a batch (bounds memory "
        "for large events)")
    idle_timeout_s: float = Field(
        600.0, gt=0, le=864_000, description="A run with no request for this long is closed (its client died)")


class WorkerSettings(_Section):
    """``charon worker``: connects to a router and simulates what it is given."""

    router: Annotated[Endpoint, Flag("--router", ("worker", "config"), "ENDPOINT")] = Field(
        "tcp://localhost:6667", description="Router's worker-facing endpoint")
    capacity: Annotated[int, Flag("--capacity", ("worker", "config"), "N")] = Field(1, ge=1, le=1024, description="Requests taken at once")
    reconnect_initial_s: float = Field(1.0, gt=0, le=3600, description="First reconnect delay")
    reconnect_max_s: float = Field(32.0, gt=0, le=3600, description="Longest reconnect delay")
    reconnect_max_attempts: int = Field(0, ge=0, description="Give up after this many; 0 = never")
    drain_grace_s: float = Field(
        25.0, ge=0, le=86_400, description="After SIGTERM: longest wait for in-flight work"
    )

    @model_validator(mode="after")
    def _backoff_order(self) -> WorkerSettings:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")
        return self


class ClientSettings(_Section):
    """Client library and CLI clients (ping, info, simulate)."""

    endpoint: Annotated[Endpoint, Flag("--endpoint", CLIENT_COMMANDS, "ENDPOINT")] = Field(
        "tcp://127.0.0.1:5555", description="Server or router endpoint")
    timeout_s: Annotated[float, Flag("--timeout", CLIENT_COMMANDS, "SECONDS")] = Field(
        30.0, gt=0, le=86_400, description="Reply timeout per try")
    retries: Annotated[int, Flag("--retries", CLIENT_COMMANDS, "N")] = Field(
        3, ge=0, le=1000, description="Resends after a timeout")


class GatewaySettings(_Section):
    """``charon flukaio-gateway``: FlukaIO TCP front end."""

    listen: Annotated[Endpoint, Flag("--listen", ("flukaio-gateway",), "ENDPOINT")] = Field(
        "tcp://*:14999", description="TCP address FlukaIO clients connect to")
    router: Annotated[Endpoint | None, Flag("--router", ("flukaio-gateway",), "ENDPOINT")] = Field(
        None, description="v1 endpoint to forward batches to; unset = simulate with a local engine"
    )
    layout: Annotated[Literal["auto", "current", "legacy"], Flag("--layout", ("flukaio-gateway",))] = Field(
        "auto", description="FlukaIO particle layout: 121-byte current, 95-byte legacy, or detect"
    )
    gen: Annotated[Literal["generation", "flags"], Flag("--gen", ("flukaio-gateway",))] = Field(
        "generation", description="What a particle's gen field holds: generation data such as a parent "
        "id (xcoll; only its CHERENKOV/SCINTILLATION bits become photon flags), or flags (the client sends "
        "Chroma history bits; photons with a terminal bit are not propagated)"
    )
    allow: Annotated[str, AfterValidator(_networks)] = Field(
        "", description="Client networks allowed to connect, comma-separated, e.g. 10.0.0.0/8,::1/128; "
        "other peers are closed at once and counted; empty = every client"
    )
    idle_timeout_s: float = Field(
        600.0, gt=0, le=864_000, description="Close a connection that sends nothing this long")
    write_timeout_s: float = Field(3000.0, gt=0, le=864_000, description="Write timeout per connection")
    max_batch_particles: int = Field(
        1_000_000, ge=1, le=100_000_000,
        description="Largest batch accepted before the connection is closed (about 120 B per particle)",
    )
    max_connections: int = Field(64, ge=1, le=100_000, description="Concurrent FlukaIO connections")
    reap_idle_s: float = Field(
        30.0, ge=0, le=864_000, description="At max_connections, a new client closes the connection idle "
        "longest if it has been idle at least this long (instead of being refused)"
    )
    max_inflight_particles: int = Field(
        2_000_000, ge=1, le=1_000_000_000, description="Particles held by all connections together (batches "
        "being received or simulated); above it no connection is read until memory is freed (about 500 B "
        "of memory per particle at the peak)"
    )
    chunk_photons: int = Field(
        100_000, ge=1, le=100_000_000, description="Photons per engine call; a batch whose client has gone "
        "is abandoned between calls (batches of up to this many photons are one call)"
    )
    drain_grace_s: float = Field(
        25.0, ge=0, le=86_400, description="After SIGTERM: longest wait for batches whose EOB has arrived "
        "(new connections and batches are refused meanwhile)"
    )
    echo: Annotated[bool, Flag("--echo", ("flukaio-gateway",))] = Field(
        False, description="Answer like the FlukaIO sample server (echo particles)")


class SecuritySettings(_Section):
    """CURVE encryption and authentication of the ZeroMQ sockets (``docs/security.md``).

    Off unless keys are given: plain sockets, as ChAR0N clients expect. Keys are ZeroMQ
    certificate files as ``charon keys generate`` and ``zmq.auth.create_certificates`` write them
    (``NAME.key`` public, ``NAME.key_secret`` secret).
    """

    curve_secret_key: Annotated[Path | None, Flag("--curve-secret-key", ("serve", "router", *CURVE_CLIENT_COMMANDS),
                                                      "FILE")] = Field(
        None, description="CURVE secret certificate (NAME.key_secret): the server's own for serve and router "
        "(both router sockets), this process's own for a worker, a client or the gateway's upstream"
    )
    curve_server_key: Annotated[Path | None, Flag("--curve-server-key", CURVE_CLIENT_COMMANDS, "FILE")] = Field(
        None, description="CURVE public certificate (NAME.key) of the server this process connects to (the "
        "router for a worker and the gateway); a client without --curve-secret-key uses a fresh key pair"
    )
    curve_clients: Annotated[Path | None, Flag("--curve-clients", CURVE_SERVER_COMMANDS, "DIR")] = Field(
        None, description="Directory of the allowed clients' public certificates (*.key); unset = any client "
        "key (encrypted, not authenticated); needs --curve-secret-key"
    )
    curve_workers: Annotated[Path | None, Flag("--curve-workers", ("router", "config"), "DIR")] = Field(
        None, description="router: directory of the allowed workers' public certificates (*.key); required "
        "with --curve-secret-key, an unlisted worker never registers"
    )


class Settings(BaseSettings):
    """The whole configuration; sections map to ``CHARON_<SECTION>__<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="CHARON_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        case_sensitive=False,
    )

    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()
    heartbeat: HeartbeatSettings = HeartbeatSettings()
    engine: EngineSettings = EngineSettings()
    server: ServerSettings = ServerSettings()
    router: RouterSettings = RouterSettings()
    limits: LimitsSettings = LimitsSettings()
    worker: WorkerSettings = WorkerSettings()
    v2: V2Settings = V2Settings()
    runs: RunSettings = RunSettings()
    client: ClientSettings = ClientSettings()
    gateway: GatewaySettings = GatewaySettings()
    security: SecuritySettings = SecuritySettings()


def env_name(path: tuple[str | int, ...]) -> str:
    """The environment variable of a settings field path, e.g. ('engine', 'seed')."""
    return "CHARON_" + "__".join(str(p).upper() for p in path)


@dataclass(frozen=True, slots=True)
class FlagField:
    """One settings field that a flag sets."""

    section: str
    field: str
    info: FieldInfo
    flag: Flag

    @property
    def path(self) -> str:
        return f"{self.section}.{self.field}"


def flags() -> Iterator[FlagField]:
    """Every (field, flag) declaration of :class:`Settings`, in declaration order."""
    for section, section_info in Settings.model_fields.items():
        model = cast(type[BaseModel], section_info.annotation)
        for field, info in model.model_fields.items():
            for meta in info.metadata:
                if isinstance(meta, Flag):
                    yield FlagField(section, field, info, meta)


def describe_setting(path: str) -> str:
    """A setting with every way to set it, e.g. ``engine.seed (--seed / CHARON_ENGINE__SEED)``."""
    names = [f.flag.name for f in flags() if f.path == path]
    names.append(env_name(tuple(path.split("."))))
    return f"{path} ({' / '.join(names)})"


def invalid_setting(path: str, value: object, why: str) -> ConfigError:
    """The one-line error for a bad value of the setting ``path`` (``section.field``)."""
    return ConfigError(f"invalid setting {describe_setting(path)} = {value!r}: {why}", setting=path)


def load_settings(overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Settings:
    """Build settings from the environment plus command-line overrides ({section: {field: value}}).

    Raises :class:`ConfigError` with one readable line naming the setting (with its flag and
    environment variable), the value and what is allowed.
    """
    try:
        return Settings(**cast(Any, dict(overrides or {})))
    except ValidationError as exc:
        err = exc.errors()[0]
        dotted = ".".join(str(p) for p in err["loc"])
        allowed = err["msg"]
        if err["type"] == "literal_error":
            allowed = "allowed: " + err["ctx"]["expected"]
        elif err["type"] == "string_pattern_mismatch":
            allowed = "expected " + _PATTERN_HINTS.get(err["ctx"]["pattern"], err["msg"])
        raise invalid_setting(dotted, err.get("input"), allowed) from None


def environment(settings: Settings) -> dict[str, str]:
    """``CHARON_*`` variables that reproduce ``settings`` in a child process (unset fields omitted)."""
    env: dict[str, str] = {}
    for section, values in settings.model_dump(mode="json").items():
        for field, value in values.items():
            if value is None:
                continue
            env[env_name((section, field))] = str(value).lower() if isinstance(value, bool) else str(value)
    return env
