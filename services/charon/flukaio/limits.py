"""The gateway's admission rules, sans-IO: who may connect, who may be read, who makes room.

The FlukaIO library has no authentication and its clients choose their batch sizes, so the
gateway bounds what peers can take from it. These rules take values (time is an argument) and
return decisions; the asyncio driver (:mod:`charon.flukaio.gateway`) applies them.

* :class:`AllowList`: peers outside ``gateway.allow`` are refused; each refused address is
  reported once (a bounded memory of addresses already reported).
* :func:`may_read`: the in-flight particle budget (``gateway.max_inflight_particles``) over all
  connections, with the tie-break that keeps batches being collected from deadlocking: when
  nothing is being simulated, the batch that began first may finish.
* :func:`reap_choice`: at ``gateway.max_connections``, which idle connection makes room.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

K = TypeVar("K", bound=Hashable)

#: Refused addresses remembered for "report once" (the oldest are forgotten past this).
REPORTED_ADDRESSES: Final = 4096


class AllowList:
    """``gateway.allow``: empty admits everyone; IPv4-mapped IPv6 peers match as IPv4."""

    def __init__(self, networks: Sequence[Network], remember: int = REPORTED_ADDRESSES) -> None:
        self.networks = tuple(networks)
        self._reported: OrderedDict[str, None] = OrderedDict()
        self._remember = remember

    def allows(self, host: str) -> bool:
        if not self.networks:
            return True
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 scope id is no part of it
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def first_refusal(self, host: str) -> bool:
        """True the first time ``host`` is refused (while it is remembered): log it then."""
        if host in self._reported:
            self._reported.move_to_end(host)
            return False
        self._reported[host] = None
        if len(self._reported) > self._remember:
            self._reported.popitem(last=False)
        return True


@dataclass(frozen=True, slots=True)
class Holding:
    """What the budget sees of one connection: particles of the batch being received (and when
    that batch began) and of the batch being simulated."""

    collecting: int
    simulating: int
    batch_began: float

    @property
    def held(self) -> int:
        return self.collecting + self.simulating


def may_read(me: Holding, everyone: Iterable[Holding], budget: int) -> bool:
    """Whether ``me`` (one of ``everyone``) may decode and read more under ``budget`` particles.

    Under the budget, everyone may. At or over it, nobody may while a simulation is running (it
    will free memory); when none is, only the connection whose batch began first may go on, so
    the total exceeds the budget by at most that one batch and collecting batches cannot
    deadlock.
    """
    holdings = list(everyone)
    if sum(h.held for h in holdings) < budget:
        return True
    if any(h.simulating for h in holdings):
        return False
    collecting = [h for h in holdings if h.collecting]
    return not collecting or me is min(collecting, key=lambda h: h.batch_began)


def reap_choice(idle_since: dict[K, float], now: float, reap_idle_s: float) -> K | None:
    """The connection idle longest (``idle_since``: last data received, for idle ones only), if it
    has been idle at least ``reap_idle_s``; None if none may be reaped."""
    if not idle_since:
        return None
    key = min(idle_since, key=idle_since.__getitem__)
    return key if now - idle_since[key] >= reap_idle_s else None
