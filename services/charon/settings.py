"""charon's configuration: one frozen pydantic-settings tree, the single source of truth.

Every command reads the same :class:`Settings`. Values come, in rising priority, from defaults,
the environment (``CHARON_<SECTION>__<FIELD>``, e.g. ``CHARON_ROUTER__QUEUE_DEADLINE_S=60``) and
command-line flags. ``charon config`` prints the effective tree and ``make schema`` turns the same
models into the Helm chart's ``values.schema.json``, so the chart cannot drift from the code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from charon.errors import ConfigError


def _port_in_range(value: str) -> str:
    """TCP ports are 16 bits; ZeroMQ would silently bind a larger number modulo 65536."""
    if value.startswith(("ipc://", "inproc://")):
        return value
    port = value.rsplit(":", 1)[-1]
    if port.isdigit() and int(port) > 65535:
        raise ValueError(f"port above 65535 (got {port})")
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


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LogSettings(_Section):
    """Logging."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level: debug logs one line per request"
    )


class MetricsSettings(_Section):
    """Prometheus metrics and the /healthz, /readyz endpoints."""

    addr: HostPort | None = Field(
        None,
        description="HOST:PORT of the metrics/health HTTP server; unset = the role's default "
        "(router and serve :9100, worker and gateway :0, i.e. a free port that is logged)",
    )
    enabled: bool = Field(True, description="Serve metrics and health endpoints at all")


class HeartbeatSettings(_Section):
    """Router <-> worker heartbeating; router and workers must agree."""

    interval_s: float = Field(1.0, gt=0, le=60, description="Seconds between heartbeats")
    liveness: int = Field(3, ge=2, le=100, description="Missed heartbeats before a peer is dead")


class EngineSettings(_Section):
    """The photon engine a server or worker runs."""

    backend: Literal["builtin", "numpy", "echo", "chroma"] = Field(
        "builtin", description="Simulation backend: builtin (Warp engine), numpy (reference), "
        "echo (no physics, one hit per photon), chroma (GPU)"
    )
    detector: Path | None = Field(
        None, description="Detector: a charon .npz, or a Geant4/RAT-PAC .gdml imported at start-up (with "
        "engine.ratdb or engine.pmt_volume); unset = the built-in reference detector"
    )
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Random seed; results depend only on "
                      "(seed, event id, photon index)")
    max_steps: int = Field(1000, ge=1, le=1_000_000, description="Propagation steps per photon")
    echo_delay_s: float = Field(0.0, ge=0, le=3600, description="echo backend: sleep per request")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="builtin backend device")
    cuda_device: int = Field(0, ge=0, le=63, description="CUDA device index (builtin, chroma)")
    threads: int = Field(0, ge=0, le=256, description="CPU threads for the builtin engine; 0 = all cores")
    chunk_photons: int = Field(
        1_000_000, ge=1000, le=100_000_000, description="Photons per engine launch (bounds memory)"
    )
    kernel_cache_dir: Path | None = Field(
        None, description="Compiled-kernel cache directory (must be writable); unset = the engine's default"
    )
    ratdb: Path | None = Field(
        None, description="RATDB file with PMTINFO (RAT's JSON dump or a .ratdb text file) for a GDML "
        "detector: channel k is PMTINFO entry k (every backend)"
    )
    pmt_volume: str | None = Field(
        None, max_length=1000, description="GDML detector without PMTINFO: regular expression naming the PMT "
        "logical volumes; channels follow placement order"
    )
    world: str | None = Field(
        None, max_length=1000, description="GDML detector: the logical volume to use as the world "
        "(default: the file's <setup>)"
    )
    chord_mm: float = Field(
        0.5, gt=0, le=100, description="GDML detector: largest distance (mm) between a curved surface and "
        "its triangles"
    )
    detector_cache_dir: Path | None = Field(
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


class ServerSettings(_Section):
    """``charon serve``: one process, simulates requests itself."""

    bind: Endpoint = Field("tcp://*:5555", description="Client-facing endpoint")
    legacy_pong: bool = Field(False, description="Answer PING with PONG (pre-2024 clients only)")


class RouterSettings(_Section):
    """``charon router``: queues client requests and load-balances them over workers."""

    bind: Endpoint = Field("tcp://*:5555", description="Client-facing endpoint")
    workers_bind: Endpoint = Field("tcp://*:6667", description="Worker-facing endpoint")
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
    fingerprint: str | None = Field(
        None, pattern=_FINGERPRINT_PATTERN, description="Accept only workers with this detector fingerprint"
    )
    accept_legacy_workers: bool = Field(
        True, description="Accept ChAR0N workers (bare one-byte READY) as capacity-1 workers"
    )


class WorkerSettings(_Section):
    """``charon worker``: connects to a router and simulates what it is given."""

    router: Endpoint = Field("tcp://localhost:6667", description="Router's worker-facing endpoint")
    capacity: int = Field(1, ge=1, le=1024, description="Requests taken at once")
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

    endpoint: Endpoint = Field("tcp://127.0.0.1:5555", description="Server or router endpoint")
    timeout_s: float = Field(30.0, gt=0, le=86_400, description="Reply timeout per try")
    retries: int = Field(3, ge=0, le=1000, description="Resends after a timeout")


class GatewaySettings(_Section):
    """``charon flukaio-gateway``: FlukaIO TCP front end."""

    listen: Endpoint = Field("tcp://*:14999", description="TCP address FlukaIO clients connect to")
    router: Endpoint | None = Field(
        None, description="v1 endpoint to forward batches to; unset = simulate with a local engine"
    )
    layout: Literal["auto", "current", "legacy"] = Field(
        "auto", description="FlukaIO particle layout: 121-byte current, 95-byte legacy, or detect"
    )
    idle_timeout_s: float = Field(3000.0, gt=0, le=864_000, description="Read timeout per connection")
    write_timeout_s: float = Field(3000.0, gt=0, le=864_000, description="Write timeout per connection")
    max_batch_particles: int = Field(
        1_000_000, ge=1, le=100_000_000,
        description="Largest batch accepted before the connection is closed (about 120 B per particle)",
    )
    max_connections: int = Field(64, ge=1, le=100_000, description="Concurrent FlukaIO connections")
    echo: bool = Field(False, description="Answer like the FlukaIO sample server (echo particles)")


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
    worker: WorkerSettings = WorkerSettings()
    client: ClientSettings = ClientSettings()
    gateway: GatewaySettings = GatewaySettings()


def env_name(path: tuple[str | int, ...]) -> str:
    """The environment variable of a settings field path, e.g. ('engine', 'seed')."""
    return "CHARON_" + "__".join(str(p).upper() for p in path)


def load_settings(overrides: dict[str, dict[str, Any]] | None = None, *, flags: dict[str, str] | None = None
                  ) -> Settings:
    """Build settings from the environment plus command-line overrides ({section: {field: value}}).

    ``flags`` maps 'section.field' to the command-line flag that set it, for error messages.
    Raises :class:`ConfigError` with one readable line naming the setting, value and what is allowed.
    """
    overrides = overrides or {}
    try:
        return Settings(**cast(Any, overrides))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc)
        source = (flags or {}).get(dotted)
        where = f"{source} / {env_name(loc)}" if source else env_name(loc)
        value = err.get("input")
        allowed = err["msg"]
        if err["type"] == "literal_error":
            allowed = "allowed: " + err["ctx"]["expected"]
        elif err["type"] == "string_pattern_mismatch":
            allowed = "expected " + _PATTERN_HINTS.get(err["ctx"]["pattern"], err["msg"])
        raise ConfigError(f"invalid setting {dotted} ({where}) = {value!r}: {allowed}") from None

