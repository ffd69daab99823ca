"""Every error charon can report, each tied to the wire reply it produces and a metric label.

    CharonError
    ├── ProtocolError                 a request that cannot be served as sent
    │   ├── UnknownRequest            -> [UNKNOWN_REQUEST]             outcome="unknown_request"
    │   └── MalformedRequest          -> [SIM_FAILED, event_id] when the event id can be read,
    │                                    else [UNKNOWN_REQUEST]        outcome="malformed"
    ├── CapacityError                 -> [NO_WORKERS]
    │   ├── QueueFull                                                  outcome="queue_full"
    │   └── DeadlineExceeded                                           outcome="deadline"
    ├── SimulationFailed              -> [SIM_FAILED, event_id]        outcome="simulation_failed"
    │   └── RetriesExhausted          (workers kept dying)             outcome="retries_exhausted"
    ├── ConfigError                   one line on stderr, exit status 2
    └── DetectorError                 a detector file or definition that cannot be used

The ratpac-two client treats every PHOTONDATA reply other than SIM_COMPLETE as a failure and
resends, so the codec answers SIM_COMPLETE wherever the physics allows (e.g. zero photons) and
these errors are reserved for requests that really cannot be simulated.
"""

from __future__ import annotations

import struct
from typing import ClassVar

from charon.protocol import tokens


def _sim_failed(event_id: int) -> list[bytes]:
    """[SIM_FAILED, event id as 4 little-endian bytes] (the codec's ``v1.sim_failed``, which imports this module)."""
    return [tokens.SIM_FAILED, struct.pack("<I", event_id & 0xFFFFFFFF)]


class CharonError(Exception):
    """Base of all charon errors."""

    outcome: ClassVar[str] = "error"

    def reply(self) -> list[bytes]:
        """The v1 payload frames (no envelope) that answer the request that raised this."""
        return [tokens.UNKNOWN_REQUEST]


class ProtocolError(CharonError):
    """A request that cannot be served as it was sent."""


class UnknownRequest(ProtocolError):
    """The header is not a v1 request, or the message has no frames at all."""

    outcome = "unknown_request"


class MalformedRequest(ProtocolError):
    """A known request whose frames break the v1 layout (counts, lengths, sizes)."""

    outcome = "malformed"

    def __init__(self, message: str, event_id: int | None = None) -> None:
        super().__init__(message)
        self.event_id = event_id

    def reply(self) -> list[bytes]:
        if self.event_id is None:
            return [tokens.UNKNOWN_REQUEST]
        return _sim_failed(self.event_id)


class CapacityError(CharonError):
    """No worker can take the request: answered with NO_WORKERS."""

    def reply(self) -> list[bytes]:
        return [tokens.NO_WORKERS]


class QueueFull(CapacityError):
    """The router's queue is at its request or byte bound."""

    outcome = "queue_full"


class DeadlineExceeded(CapacityError):
    """The request waited in the queue longer than the queue deadline."""

    outcome = "deadline"


class SimulationFailed(CharonError):
    """The engine raised while simulating an event."""

    outcome = "simulation_failed"

    def __init__(self, message: str, event_id: int) -> None:
        super().__init__(message)
        self.event_id = event_id

    def reply(self) -> list[bytes]:
        return _sim_failed(self.event_id)


class RetriesExhausted(SimulationFailed):
    """Every worker given the request died or left before answering, up to the attempt limit."""

    outcome = "retries_exhausted"


class ConfigError(CharonError):
    """An invalid setting or command-line value."""


class DetectorError(CharonError):
    """A detector definition or file that cannot be loaded or used."""
