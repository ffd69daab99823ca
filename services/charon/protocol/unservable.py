"""The one decision about a well-formed v1 request that charon cannot serve: answer it, or not.

The ratpac-two client accepts exactly one reply header per request (ACK, DETECTOR_INFO,
SIM_COMPLETE / SIM_COMPLETE_ASYNC). Any other answer to a PHOTONDATA or DETECTOR_INFO
(SIM_FAILED, NO_WORKERS, UNKNOWN_REQUEST) is rejected, and the client's unsigned retry counter
can wrap on it, so it resends forever. Silence, on the other hand, ends in the client's own retry
limit: a PHOTONDATA is written with no photoelectrons, a DETECTOR_INFO fails with a clear message.

So when a well-formed request cannot be served (the queue is full, its deadline passed with or
without workers, every worker given it was lost, the engine failed), the default policy
(``v1_failure_replies = "silent"``) drops it: no reply, one log line, and an outcome
``dropped_<reason>`` in ``charon_requests_total``. ``"explicit"`` brings back ChAR0N's replies
(NO_WORKERS, SIM_FAILED) for clients that can read them. Malformed requests are not decided here:
they keep their defined replies (the ratpac-two client never sends them).

Sans-IO: it takes an error and a policy and returns the frames to send (or None) and the outcome.
Router and ``charon serve`` call it for every such request; nothing else builds these replies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from charon.errors import CharonError
from charon.protocol import v1
from charon.protocol.v1 import Frame

FailureReplies: TypeAlias = Literal["silent", "explicit"]
SILENT: Final = "silent"
EXPLICIT: Final = "explicit"
#: Prefix of every outcome of a request dropped without a reply.
DROPPED: Final = "dropped"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one requester of an unservable request."""

    #: The v1 reply payload to send; None = send nothing.
    reply: list[Frame] | None
    #: The ``outcome`` label of ``charon_requests_total``.
    outcome: str

    @property
    def dropped(self) -> bool:
        return self.reply is None


def decide(error: CharonError, policy: FailureReplies) -> Verdict:
    """Answer or drop a well-formed request that failed with ``error``.

    An error without a ``drop_reason`` is not a failure to serve (a malformed request, an unknown
    header): it is always answered with its defined reply.
    """
    reason = error.drop_reason
    if reason is None or policy == EXPLICIT:
        return Verdict(v1.error_reply(error), error.outcome)
    return Verdict(None, f"{DROPPED}_{reason}")


def is_dropped(outcome: str) -> bool:
    return outcome.startswith(DROPPED + "_")
