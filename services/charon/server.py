"""``charon serve``: one process that binds a ROUTER socket and answers every request itself.

The detector is loaded (and the engine warmed) *before* the socket is bound, so a client never
waits on a server that cannot answer yet. PING, RUN_BEGIN/END and DETECTOR_INFO are answered on
the socket thread at once; PHOTONDATA goes to a simulation thread (the worker's), which groups the
requests that wait while the engine is busy into one engine pass (``engine.batch_max_photons``,
``engine.batch_max_delay_s``), so many clients with small events keep the engine full. The socket
thread never waits on the engine: it keeps answering PING and signals during a long simulation.
v2 messages share the socket: HELLO is answered on the socket thread, a SIMULATE is admitted
within its session's credit and cut into JOBs for the simulation thread, and each JOB_DONE leaves
as one RESULT or ERROR per event the moment it comes back (v2 replies carry tags: no ordering).
No input can stop the loop. With ``runs.async_mode`` RUN_BEGIN, PHOTONDATA and RUN_END of a run go
to a :class:`charon.runs.ledger.RunLedger` and the simulation thread writes the run file
(``runs.outdir``). A well-formed PHOTONDATA the engine fails on is answered or dropped
as :func:`charon.protocol.unservable.decide` says (``server.v1_failure_replies``); a v2 event the
engine fails on always gets its ERROR. With ``security.curve_secret_key`` the socket is a CURVE
server guarded by :class:`charon.auth.Guard`.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import zmq
from prometheus_client import CollectorRegistry

from charon import curve, sockets
from charon.auth import Guard
from charon.connections import ConnectionGuard, check_descriptors, raise_descriptor_limit
from charon.engine.base import Simulator
from charon.errors import CharonError, SimulationFailed
from charon.health import HealthServer
from charon.liveness import Progress
from charon.metrics import RequestMetrics, RunCounts, kind_label, new_registry
from charon.process import Stop, open_simulator, run_service
from charon.protocol import tokens, unservable, v1, v2
from charon.protocol.v1 import Frame
from charon.router.v2 import V2_KIND, V2Part, welcome_of
from charon.runs import ledger as runs
from charon.runs.recorder import CLOSED, Recorder, RunCommand, unpack_report
from charon.service import Answer, RequestHandler
from charon.sessions import Limits, Sessions
from charon.settings import Settings, invalid_setting
from charon.worker.outbox import Outbox
from charon.worker.simulation import SimulationThread, Work

log = logging.getLogger("charon.serve")
_POLL_MS = 200
#: Requests handed to the engine and not answered yet, beyond which no more are read (the socket's
#: queue and the client's own timeout then hold the rest back).
MAX_PENDING = 1024


@dataclass(slots=True)
class _Pending:
    envelope: list[Frame]
    arrived: float
    n_photons: int
    #: The reply, once known; it leaves when every earlier request of its connection has left.
    reply: list[Frame] | None = None
    #: Known to go unanswered (an engine failure under the silent policy): leaves without a reply.
    dropped: bool = False


class Server:
    """The ``charon serve`` service around one simulator (which its caller opened and closes)."""

    stopping = "stopping after the current request"

    def __init__(self, settings: Settings, simulator: Simulator, *, context: zmq.Context[Any] | None = None,
                 registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.handler = RequestHandler(simulator, legacy_pong=settings.server.legacy_pong)
        self.registry = registry if registry is not None else new_registry()
        self.metrics = RequestMetrics(self.registry)
        self.metrics.auth_refused.labels(sockets.CLIENTS)  # 0 with CURVE off: nothing is refused
        self.progress = Progress()
        self.clock = clock
        self.http = HealthServer(settings.metrics, 9100, self.registry)
        self.http.health.liveness = self.progress.check(settings.engine.stall_timeout_s, clock)
        self._ctx: zmq.Context[Any] | None = context
        self._own_ctx = False
        self._sock: zmq.Socket[Any] | None = None
        self._outbox: Outbox | None = None
        self._sim: SimulationThread | None = None
        self._guard: Guard | None = None
        self._pending: dict[int, _Pending] = {}
        #: Per client connection (ROUTER identity), its requests in arrival order: replies leave in
        #: that order, as a DEALER client pipelining v1 requests (which carry no request id) needs.
        self._order: dict[bytes, deque[int]] = {}
        self._tokens = itertools.count(1)
        self._connections: ConnectionGuard | None = None
        self._dropped = sockets.DroppedReplies(self.metrics.replies_dropped)
        v2s = settings.v2
        self.sessions = Sessions(Limits(v2s.credit, v2s.max_events_per_message, v2s.max_photons_per_message,
                                        v2s.job_max_photons), v2s.max_sessions)
        #: v2 jobs handed to the engine: their requester's envelope and events, by token.
        self._jobs: dict[int, tuple[list[Frame], V2Part, int, float]] = {}
        r = settings.runs
        self.runs: runs.RunLedger | None = None
        self._recorder: Recorder | None = None
        if r.async_mode:
            if r.outdir is None:
                raise invalid_setting("runs.outdir", None, "async mode (--async-mode) writes run files: "
                                      "give the directory with --outdir")
            self.runs = runs.RunLedger(flush_events=r.flush_events, flush_bytes=r.flush_bytes,
                                       idle_timeout_s=r.idle_timeout_s, allow_absolute=r.allow_absolute)
            self._run_counts = RunCounts(self.metrics, self.runs)
            self._recorder = Recorder(self.handler, r.outdir)

    def startup(self) -> dict[str, object]:
        keys = curve.server_keys(self.settings.security)
        simulator = self.handler.simulator
        log.info("engine %s ready, detector %s, %d channels", simulator.name, simulator.fingerprint[:12],
                 len(simulator.detector_info()))
        metrics_addr = self.http.start()
        ctx = self._context()
        self._outbox = Outbox()
        engine = self.settings.engine
        self._sim = SimulationThread(self.handler, self._outbox, batch_max_photons=engine.batch_max_photons,
                                     batch_max_delay_s=engine.batch_max_delay_s, progress=self.progress,
                                     clock=self.clock, recorder=self._recorder)
        self._sim.start()
        limits = self.settings.limits
        self._sock = sockets.serve_socket(ctx, keys, limits=limits)
        if keys is not None:
            self._guard = Guard(ctx, self.metrics.auth_refused)
            # The socket's monitor is the connection guard's; it hands failed handshakes on.
            self._guard.protect(self._sock, sockets.CLIENTS, keys, monitor=False)
            self._guard.start()
        self._connections = ConnectionGuard(self._sock, limits.max_client_connections, self.metrics,
                                            handshake=self._guard.handshake_event if self._guard else None)
        endpoint = sockets.bind(self._sock, self.settings.server.bind)
        descriptors = check_descriptors(limits.max_client_connections)
        log.info("limits: requests up to %d bytes (%d photons), %d unread replies per client, %d client "
                 "connections (descriptor limit %d)", limits.max_request_bytes, limits.max_request_photons,
                 limits.client_send_hwm, limits.max_client_connections, descriptors)
        self.http.health.set_ready(True)
        if self.runs is not None:
            log.info("async mode: run files in %s, %d events per batch", self.settings.runs.outdir,
                     self.settings.runs.flush_events)
        log.info("serving on %s%s", endpoint, _curve_note(keys))
        return {"endpoint": endpoint, "metrics": metrics_addr, "fingerprint": simulator.fingerprint}

    def run(self, stop: Stop) -> int:
        assert self._sock is not None, "startup() first"
        assert self._outbox is not None
        poller = zmq.Poller()
        poller.register(self._outbox.fd, zmq.POLLIN)
        if self._connections is not None:
            poller.register(self._connections.socket, zmq.POLLIN)
        reading = False
        while not stop.is_set():
            if reading != (self._in_hand() < MAX_PENDING):
                reading = not reading
                if reading:
                    poller.register(self._sock, zmq.POLLIN)
                else:
                    poller.unregister(self._sock)
            ready = dict(poller.poll(_POLL_MS))
            if self._outbox.fd in ready:
                self._forward_results()
            if self._sock in ready:
                self._receive(self._sock)
            if self._connections is not None and self._connections.socket in ready:
                self._connections.handle()
            if self.runs is not None:
                self._run_actions(self.runs.tick(self.clock()))
        self._finish_pending()
        return 0

    def _receive(self, sock: zmq.Socket[Any]) -> None:
        """Take the requests waiting on the socket: engine work to the simulation thread, the rest
        answered here."""
        while self._in_hand() < MAX_PENDING and sock.poll(0):
            frames = sock.recv_multipart(copy=False)
            envelope, payload = v1.split_envelope([f.buffer for f in frames])
            client = bytes(v1.as_view(envelope[0])) if envelope else b""
            if v2.is_v2(payload):  # v2 has its own limits (v2.max_photons_per_message), answered with ERROR
                self._v2(envelope, client, payload)
                continue
            if self._too_large(envelope, payload):
                continue
            if self.runs is not None and self._run_request(frames[0], envelope, payload):
                continue
            engine_work = _engine_request(payload)
            if engine_work is None and not self._order.get(client):
                start = time.perf_counter()
                answer = self.handler.handle(payload)
                self._record(answer, time.perf_counter() - start)
                self._send(envelope, answer.reply)
                continue
            token = next(self._tokens)
            pending = self._pending[token] = _Pending(envelope, time.perf_counter(), _photon_count(payload))
            self._order.setdefault(client, deque()).append(token)
            if engine_work is not None:
                assert self._sim is not None
                self._sim.inbox.put(Work(0, token, payload, engine_work))
            else:  # behind engine work of its connection: answered now, sent in turn
                start = time.perf_counter()
                answer = self.handler.handle(payload)
                self._record(answer, time.perf_counter() - start)
                pending.reply = list(answer.reply)
                self._release(client)

    def _too_large(self, envelope: Sequence[Frame], payload: Sequence[Frame]) -> bool:
        """A request over ``limits.max_request_bytes``: counted, and dropped or answered as
        :func:`charon.protocol.unservable.decide` says."""
        limits = self.settings.limits
        try:
            v1.check_size(payload, limits.max_request_bytes, limits.max_request_photons)
        except CharonError as exc:
            kind = kind_label(v1.header_of(payload))
            verdict = unservable.decide(exc, self.settings.server.v1_failure_replies)
            self.metrics.requests.labels(kind, verdict.outcome).inc()
            log.warning("%s refused (%s): %s", kind, verdict.outcome, exc)
            if verdict.reply is not None:
                self._send(envelope, verdict.reply)
            return True
        return False

    def _in_hand(self) -> int:
        return len(self._pending) + len(self._jobs)

    def _v2(self, envelope: list[Frame], client: bytes, payload: list[Frame]) -> None:
        """A v2 message: HELLO answered now; SIMULATE admitted and its jobs given to the engine."""
        try:
            message = v2.decode_from_client(payload)
        except CharonError as exc:
            self.metrics.requests.labels(V2_KIND, exc.outcome).inc()
            log.warning("v2 message rejected (%s): %s", exc.outcome, exc)
            for reply in v2.rejection(exc):
                self._send(envelope, reply)
            return
        if isinstance(message, v2.Hello):
            self.sessions.hello(client, message)
            sim = self.handler.simulator
            welcome = welcome_of(self.sessions.limits, sim.name, sim.fingerprint, sim.detector_info().frames(),
                                 message.seed)
            self.metrics.requests.labels("hello_v2", "ok").inc()
            self._send(envelope, v2.welcome(welcome))
            return
        admission = self.sessions.admit(client, message)
        for reply in admission.errors:
            self._send(envelope, reply)
        if admission.errors:
            self.metrics.requests.labels(V2_KIND, "refused").inc()
        assert self._sim is not None
        for frames, events, photons in admission.jobs:
            token = next(self._tokens)
            self._jobs[token] = (envelope, V2Part(client, events, self.sessions), photons, time.perf_counter())
            self._sim.inbox.put(Work(0, token, frames))

    def _run_request(self, first: zmq.Frame, envelope: list[Frame], payload: list[Frame]) -> bool:
        """Async mode: RUN_BEGIN, RUN_END and a run's PHOTONDATA go to the ledger (True if it took it)."""
        assert self.runs is not None
        header = v1.header_of(payload)
        if header not in (tokens.RUN_BEGIN, tokens.RUN_END, tokens.PHOTONDATA):
            return False
        try:
            request = v1.decode_request(payload)
        except CharonError:
            return False  # malformed: answered as always
        client, now = sockets.peer_address(first), self.clock()
        refused = self.runs.refused_names
        if isinstance(request, v1.RunBegin):
            actions = self.runs.run_begin(client, envelope, request.filename, now)
        elif isinstance(request, v1.RunEnd):
            actions = self.runs.run_end(client, envelope, now)
        else:
            assert isinstance(request, v1.PhotonData)
            taken = self.runs.photondata(client, envelope, request, payload, now)
            if taken is None:
                return False  # no run open for this client: answered synchronously
            actions = taken
        outcome = "bad_filename" if self.runs.refused_names > refused else "ok"
        self.metrics.requests.labels(kind_label(header), outcome).inc()
        self._run_actions(actions)
        return True

    def _run_actions(self, actions: Sequence[runs.Action]) -> None:
        self._run_counts.sync()  # before the replies: a client that got its ACK sees the counts
        if not actions:
            return
        assert self._sim is not None
        for action in actions:
            if isinstance(action, runs.Reply):
                self._send(action.envelope, action.frames)
            else:
                self._sim.inbox.put(RunCommand(0, action))

    def _forward_results(self) -> None:
        assert self._outbox is not None
        for reply in self._outbox.take():
            job = self._jobs.pop(reply.token, None)
            if job is not None:
                self._job_done(job, reply.frames)
                continue
            if reply.token == 0:  # a run report from the recorder
                assert self.runs is not None
                run_id, count = unpack_report(reply.frames[1])
                closed = bytes(reply.frames[0]) == CLOSED
                self._run_actions(self.runs.closed(run_id, count) if closed else self.runs.written(run_id, count))
                continue
            pending = self._pending.get(reply.token)
            if pending is None:
                continue
            answer = _answer_of(reply.frames, pending.n_photons)
            if answer.outcome != "ok":
                event_id = v1.read_event_id(reply.frames[1]) if len(reply.frames) > 1 else None
                verdict = unservable.decide(SimulationFailed(answer.detail, event_id),
                                            self.settings.server.v1_failure_replies)
                if verdict.dropped:
                    answer = replace(answer, outcome=verdict.outcome,
                                     detail=f"event {event_id}: {answer.detail}; dropped without a reply")
                    pending.dropped = True
            pending.reply = reply.frames
            self._record(answer, time.perf_counter() - pending.arrived)
            self._release(bytes(v1.as_view(pending.envelope[0])) if pending.envelope else b"")

    def _job_done(self, job: tuple[list[Frame], V2Part, int, float], payload: list[Frame]) -> None:
        envelope, part, photons, arrived = job
        seconds = time.perf_counter() - arrived
        m = self.metrics  # counted before the replies leave: a client that has them sees the counts
        m.requests.labels(V2_KIND, "ok").inc()
        m.request_duration.labels("service").observe(seconds)
        m.request_duration.labels("total").observe(seconds)
        m.photons.inc(photons)
        m.hits.inc(V2Part.hits_of(payload))
        for reply in part.replies(payload):
            self._send(envelope, reply)

    def _release(self, client: bytes) -> None:
        """Send the replies at the head of ``client``'s queue that are ready, in order."""
        order = self._order.get(client)
        while order and self._pending[order[0]].reply is not None:
            done = self._pending.pop(order.popleft())
            assert done.reply is not None
            if not done.dropped:
                self._send(done.envelope, done.reply)
        if not order:
            self._order.pop(client, None)

    def _send(self, envelope: Sequence[Frame], reply: Sequence[Frame]) -> None:
        assert self._sock is not None
        reason = sockets.send_reply(self._sock, [*envelope, *reply])
        if reason is not None:
            self._dropped(reason)

    def _finish_pending(self) -> None:
        """After a stop: answer what the engine has in hand, within the worker's drain grace."""
        deadline = self.clock() + self.settings.worker.drain_grace_s
        if self._in_hand():
            log.info("finishing %d request(s) in hand", self._in_hand())
        assert self._outbox is not None
        poller = zmq.Poller()
        poller.register(self._outbox.fd, zmq.POLLIN)
        while self._in_hand() and self.clock() < deadline:
            if poller.poll(_POLL_MS):
                self._forward_results()
        if self._in_hand():
            log.warning("%d request(s) unanswered at exit", self._in_hand())

    def _record(self, answer: Answer, seconds: float) -> None:
        """Metrics and the per-request log line of one answered request."""
        m = self.metrics
        m.requests.labels(answer.kind, answer.outcome).inc()
        m.request_duration.labels("service").observe(seconds)
        m.request_duration.labels("total").observe(seconds)
        if answer.outcome == "ok":
            if answer.kind == "photondata":
                m.photons.inc(answer.n_photons)
                m.hits.inc(answer.n_hits)
            log.debug("%s ok: %d photons -> %d hits in %.3f ms", answer.kind, answer.n_photons,
                      answer.n_hits, seconds * 1e3)
        else:
            log.warning("%s rejected (%s): %s", answer.kind, answer.outcome, answer.detail)

    def shutdown(self) -> None:
        self.http.health.set_ready(False)
        if self._connections is not None:
            self._connections.close()
            self._connections = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._guard is not None:
            self._guard.stop()
            self._guard = None
        if self._sim is not None:
            if not self._sim.stop(timeout=1.0):
                log.warning("simulation still running at exit")
            self._sim = None
        if self._outbox is not None:
            self._outbox.close()
            self._outbox = None
        if self._own_ctx and self._ctx is not None:
            self._ctx.term()
            self._ctx, self._own_ctx = None, False
        self.http.stop()

    def _context(self) -> zmq.Context[Any]:
        if self._ctx is None:
            self._ctx, self._own_ctx = zmq.Context(), True
        return self._ctx


def main(settings: Settings) -> int:
    raise_descriptor_limit()
    with open_simulator(settings.engine) as simulator:
        return run_service(Server(settings, simulator))


def _curve_note(keys: curve.ServerKeys | None) -> str:
    if keys is None:
        return " (plain: no CURVE)"
    who = "any client key" if keys.allowed is None else f"{len(keys.allowed)} allowed client key(s)"
    return f" (CURVE, {who})"


def _photon_count(payload: Sequence[Frame]) -> int:
    """Photons of a PHOTONDATA from its metadata frame (0 when the frame is malformed)."""
    if len(payload) > 1:
        meta = v1.as_view(payload[1])
        if len(meta) >= 8:
            return int.from_bytes(meta[4:8], "little")
    return 0


def _engine_request(payload: Sequence[Frame]) -> v1.PhotonData | None:
    """A well-formed PHOTONDATA, decoded (the only request the engine answers; a malformed one is
    answered on the socket thread with its defined reply), else None."""
    if v1.header_of(payload) != tokens.PHOTONDATA:
        return None
    try:
        request = v1.decode_request(payload)
    except CharonError:
        return None
    return request if isinstance(request, v1.PhotonData) else None


def _answer_of(reply: Sequence[Frame], n_photons: int) -> Answer:
    """What the simulation thread's reply to a well-formed PHOTONDATA means, for metrics and the log."""
    header = v1.header_of(reply)
    if header == tokens.SIM_COMPLETE:
        n_hits = len(v1.as_view(reply[2])) // 4 if len(reply) > 2 else 0
        return Answer(reply, "photondata", "ok", n_photons, n_hits)
    return Answer(reply, kind_label(tokens.PHOTONDATA), "simulation_failed", n_photons,
                  detail=f"the engine failed ({header!r})")
