"""Every error charon raises, in one tree; each carries hints, no bytes.

An error says *what* went wrong and carries the hints every consumer needs: the kind of wire reply
it calls for (``reply_kind``), the event it concerns (``event_id``), the metric label
(``outcome``) and the exit status of a command that ends with it (``exit_status``). Each protocol
module turns a hint into its own bytes (:func:`charon.protocol.v1.error_reply`; FlukaIO has no
error message, so the gateway closes the connection); this module imports no protocol and builds
no frame.

    CharonError                        reply kind       outcome               exit
    ├── ProtocolError                  bytes that break a protocol
    │   ├── UnknownRequest             UNKNOWN_REQUEST  unknown_request
    │   ├── MalformedRequest           FAILED (event id when readable)  malformed
    │   ├── RequestTooLarge            FAILED (over limits.max_request_bytes)  too_large  dropped_too_large
    │   │   └── (charon.protocol.v2) Rejected   a v2 message answered with ERROR and its code
    │   ├── InvalidReply               a v1 reply a client rejects (carries its header)
    │   └── WorkerProtocolError        a CHARONW1 message that breaks the worker protocol
    ├── CapacityError                  NO_CAPACITY
    │   ├── QueueFull                                   queue_full            dropped_queue_full
    │   └── DeadlineExceeded                            deadline              dropped_deadline
    │       └── NoWorkers              (no worker registered at the deadline)  dropped_no_workers
    ├── SimulationFailed               FAILED           simulation_failed     dropped_engine_failure
    │   └── RetriesExhausted           (workers kept dying)  retries_exhausted  dropped_retries_exhausted
    │       └── ExecutionDeadlineExceeded  (workers kept missing router.execution_deadline_s)
    │                                                   execution_deadline    dropped_execution_deadline
    ├── ClientError                    charon's client gave up                1
    │   ├── ServerUnavailable          no valid reply after every try
    │   ├── RequestFailed              the server answered SIM_FAILED / UNKNOWN_REQUEST
    │   └── GeometryMismatch           a v2 server simulates another detector than expected
    ├── FlukaIOError                   none: the gateway closes the connection
    │   └── (charon.flukaio.codec) FlukaIOProtocolError → HandshakeError;
    │       (charon.flukaio.connection) ConnectionClosed, FlukaIOTimeout, BufferFull
    ├── StartupError                   a service cannot start (an endpoint cannot be bound)  1
    ├── ConfigError                    an invalid setting or command-line value              2
    │   ├── SchemaError                the settings cannot become the chart's values schema
    │   └── (charon.cluster) InvalidValues
    ├── DetectorError                  a detector definition or file that cannot be used     2
    └── ClusterUnavailable             no Kubernetes API to talk to                          2

The ratpac-two client treats every PHOTONDATA reply other than SIM_COMPLETE as a failure and
resends, so the codec answers SIM_COMPLETE wherever the physics allows (e.g. zero photons) and
these errors are reserved for requests that really cannot be simulated. The errors with a
``drop_reason`` (last column) are the ones a well-formed request meets when the service cannot
serve it; :mod:`charon.protocol.unservable` decides whether such a request is answered (outcome
as in the third column) or dropped (outcome ``dropped_<reason>``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import ClassVar


class ReplyKind(enum.Enum):
    """What a request that failed with an error is answered with, independent of any protocol."""

    UNKNOWN_REQUEST = "unknown_request"  # the request was not understood
    FAILED = "failed"  # the event could not be simulated (needs the event id to say which)
    NO_CAPACITY = "no_capacity"  # nothing free to take the request now; a resend may succeed


class CharonError(Exception):
    """Base of all charon errors: a message plus the hints below."""

    #: The wire reply this error calls for; None = no specific one (the protocol's generic refusal).
    reply_kind: ClassVar[ReplyKind | None] = None
    #: Bounded metric label (``outcome`` of ``charon_requests_total``).
    outcome: ClassVar[str] = "error"
    #: Exit status of a command that ends with this error.
    exit_status: ClassVar[int] = 1
    #: The v1 event the error concerns, when known.
    event_id: int | None = None
    #: Set on the errors of a well-formed request the service cannot serve (capacity, deadline,
    #: engine): the reason in the ``dropped_<reason>`` outcome when such requests go unanswered.
    drop_reason: ClassVar[str | None] = None

    def reply(self, protocol: str = "v1") -> list[bytes]:
        """The payload frames answering the request that raised this, rendered by ``protocol``."""
        render = _RENDERERS.get(protocol)
        if render is None:
            raise LookupError(f"no {protocol} reply renderer registered (import charon.protocol.{protocol})")
        return render(self)


#: Protocol name -> how that protocol turns an error's hints into reply frames.
_RENDERERS: dict[str, Callable[[CharonError], list[bytes]]] = {}


def register_renderer(protocol: str, render: Callable[[CharonError], list[bytes]]) -> None:
    """Called by a protocol module at import: how :meth:`CharonError.reply` renders for it."""
    _RENDERERS[protocol] = render


class ProtocolError(CharonError):
    """Bytes that break a protocol: a request that cannot be served as it was sent."""

    reply_kind = ReplyKind.UNKNOWN_REQUEST


class UnknownRequest(ProtocolError):
    """The header is not a v1 request, or the message has no frames at all."""

    outcome = "unknown_request"


class MalformedRequest(ProtocolError):
    """A known request whose frames break the v1 layout (counts, lengths, sizes).

    Answered as a failed event when the event id can be read, else as an unknown request.
    """

    reply_kind = ReplyKind.FAILED
    outcome = "malformed"

    def __init__(self, message: str, event_id: int | None = None) -> None:
        super().__init__(message)
        self.event_id = event_id


class RequestTooLarge(ProtocolError):
    """A request over ``limits.max_request_bytes`` (or its photon limit): never buffered for long,
    never simulated. Under the default v1 policy it gets no reply (an explicit failure would only
    make ratpac-two resend the same bytes)."""

    reply_kind = ReplyKind.FAILED
    outcome = "too_large"
    drop_reason = "too_large"

    def __init__(self, message: str, event_id: int | None = None) -> None:
        super().__init__(message)
        self.event_id = event_id


class InvalidReply(ProtocolError):
    """A v1 reply the ratpac-two client would reject (and resend the request for)."""

    def __init__(self, message: str, header: bytes) -> None:
        super().__init__(message)
        self.header = header


class WorkerProtocolError(ProtocolError, ValueError):
    """A message on the worker socket that breaks CHARONW1 (or ChAR0N's legacy framing)."""


class CapacityError(CharonError):
    """No worker can take the request now."""

    reply_kind = ReplyKind.NO_CAPACITY

    def __init__(self, message: str, event_id: int | None = None) -> None:
        super().__init__(message)
        self.event_id = event_id


class QueueFull(CapacityError):
    """The router's queue is at its request or byte bound."""

    outcome = "queue_full"
    drop_reason = "queue_full"


class DeadlineExceeded(CapacityError):
    """The request waited in the queue longer than the queue deadline."""

    outcome = "deadline"
    drop_reason = "deadline"


class NoWorkers(DeadlineExceeded):
    """The queue deadline passed while no worker at all was registered."""

    drop_reason = "no_workers"


class SimulationFailed(CharonError):
    """The engine raised while simulating an event (or a FlukaIO batch)."""

    reply_kind = ReplyKind.FAILED
    outcome = "simulation_failed"
    drop_reason = "engine_failure"

    def __init__(self, message: str, event_id: int | None = None) -> None:
        super().__init__(message)
        self.event_id = event_id


class RetriesExhausted(SimulationFailed):
    """Every worker given the request died or left before answering, up to the attempt limit."""

    outcome = "retries_exhausted"
    drop_reason = "retries_exhausted"


class ExecutionDeadlineExceeded(RetriesExhausted):
    """Every worker given the request held it past ``router.execution_deadline_s`` (or died)."""

    outcome = "execution_deadline"
    drop_reason = "execution_deadline"


class ClientError(CharonError):
    """Base of the failures charon's client library reports."""


class ServerUnavailable(ClientError):
    """No valid reply after every try (timeouts, or NO_WORKERS each time)."""


class RequestFailed(ClientError):
    """The server answered with SIM_FAILED or UNKNOWN_REQUEST (or another reply the client rejects)."""

    def __init__(self, message: str, header: bytes) -> None:
        super().__init__(message)
        self.header = header


class GeometryMismatch(ClientError):
    """A v2 server simulates another detector than the client expects (fingerprint or PMT digest)."""


class FlukaIOError(CharonError):
    """Base of FlukaIO errors. FlukaIO has no error message: the answer is closing the socket."""


class StartupError(CharonError):
    """A service cannot start: an endpoint cannot be bound or listened on."""


class ConfigError(CharonError):
    """An invalid setting or command-line value; ``setting`` names it (e.g. ``engine.seed``) when known."""

    exit_status = 2

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class SchemaError(ConfigError):
    """The settings or the chart's base schema cannot be turned into the chart's values schema."""


class DetectorError(CharonError):
    """A detector definition or file that cannot be loaded or used."""

    exit_status = 2


class ClusterUnavailable(CharonError):
    """No kubeconfig, no Kubernetes client library, or the API server cannot be reached."""

    exit_status = 2
