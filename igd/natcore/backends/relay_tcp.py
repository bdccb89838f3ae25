"""TCP relay of the userspace backend: accept on a public address, splice bytes to the target.

A flow is the accepted client socket, a non-blocking connect to the internal client and one pipe
per direction. Bytes move socket -> pipe -> socket with non-blocking `os.splice` (they never
enter user space), driven by the event loop's `add_reader`/`add_writer`. Flow control: a
direction reads its source only while its pipe is empty; when the destination does not take the
whole pipe, the direction stops reading (`remove_reader`) and waits for the destination to be
writable (`add_writer`), so a slow side never makes the relay buffer more than one pipe.
Half-closes are passed on (EOF on one side -> `shutdown(SHUT_WR)` on the other once the pipe is
drained); an error or reset on either side resets both (SO_LINGER 0).

Every limit is enforced at accept: the mapping's remote host (others are reset at once), the
flows per mapping, and a budget shared by all the backend's TCP relays.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Final

__all__ = [
    "ACCEPT_BATCH",
    "CONNECT_TIMEOUT_S",
    "FlowBudget",
    "TcpListener",
    "TcpRelay",
    "TcpStats",
    "open_tcp_listener",
]

log = logging.getLogger(__name__)

SPLICE_FLAGS: Final = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
SPLICE_REQUEST_BYTES: Final = 1 << 20
"""Bytes asked of one splice into a pipe; the pipe's capacity is the real bound."""
ROUNDS_PER_EVENT: Final = 16
"""Fill-and-drain rounds per readiness callback, so one busy flow cannot starve the others."""
ACCEPT_BATCH: Final = 64
"""Connections accepted per listener callback."""
LISTEN_BACKLOG: Final = 128
CONNECT_TIMEOUT_S: Final = 10.0
"""Longest wait for the internal client to accept; the WAN client is reset after it."""
ACCEPT_PAUSE_S: Final = 0.1
"""A listener rests this long after accept failed for lack of descriptors or memory."""
_LINGER_RESET: Final = struct.pack("ii", 1, 0)
_RESOURCE_ERRORS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class FlowBudget:
    """A cap on the flows of one protocol, shared by every relay of one backend."""

    __slots__ = ("active", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def take(self) -> bool:
        """Count one more flow; False (and nothing counted) when the cap is reached."""
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def give(self) -> None:
        """Count one flow less."""
        self.active -= 1


@dataclass(slots=True)
class TcpStats:
    """Counters of every TCP relay of a backend (monotonic, for logs and metrics)."""

    accepted: int = 0
    refused_remote: int = 0
    refused_limit: int = 0
    connect_failed: int = 0
    reset: int = 0
    accept_paused: int = 0


def open_tcp_listener(address: IPv4Address, port: int) -> socket.socket:
    """A non-blocking listening socket on address:port; OSError when the port cannot be had."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR only skips TIME_WAIT; on Linux it never lets two listeners share a port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((str(address), port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _reset_close(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0) so the peer learns at once."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    sock.close()


def _pipe() -> tuple[int, int]:
    """A non-blocking pipe (read end, write end) of the kernel's default capacity (64 KiB)."""
    # Larger pipes (F_SETPIPE_SZ) measured no faster here (bench/forward.py), and they count
    # against the per-user quota (fs.pipe-user-pages-soft) past which new pipes get 2 pages.
    return os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)


class TcpListener:
    """A listening socket on one public address; hands what it accepts to its current relay."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.relay: TcpRelay | None = None
        self._registered = False
        self._resume: asyncio.TimerHandle | None = None

    def attach(self, relay: TcpRelay) -> None:
        """Serve `relay` from now on."""
        self.relay = relay
        if not self._registered and self._resume is None:
            self.loop.add_reader(self.fd, self._on_readable)
            self._registered = True

    def detach(self) -> None:
        """Stop accepting (pending connections stay in the backlog until attach or close)."""
        self.relay = None
        self._unregister()

    def close(self) -> None:
        """Stop and close the socket; the kernel refuses new connections from now on."""
        self.detach()
        self.sock.close()

    def _unregister(self) -> None:
        if self._registered:
            self.loop.remove_reader(self.fd)
            self._registered = False
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None

    def _on_readable(self) -> None:
        relay = self.relay
        if relay is None:
            return
        for _ in range(ACCEPT_BATCH):
            try:
                client, peer = self.sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    self._pause(relay, exc)
                else:
                    log.warning("accept on %s failed: %s", self.sock.getsockname(), exc)
                return
            relay.admit(client, peer[0])

    def _pause(self, relay: TcpRelay, exc: OSError) -> None:
        """Rest after a resource error instead of spinning on a readable backlog."""
        relay.stats.accept_paused += 1
        level = logging.DEBUG if relay.stats.accept_paused > 1 else logging.WARNING  # log once
        log.log(level, "accepting paused %.1f s: %s", ACCEPT_PAUSE_S, exc.strerror)
        self._unregister()
        self._resume = self.loop.call_later(ACCEPT_PAUSE_S, self._after_pause)

    def _after_pause(self) -> None:
        self._resume = None
        if self.relay is not None:
            self.attach(self.relay)


class _Direction:
    """One direction of a flow: source socket -> pipe -> destination socket."""

    __slots__ = (
        "dst",
        "dst_fd",
        "eof",
        "flow",
        "pending",
        "pipe_r",
        "pipe_w",
        "reading",
        "shut",
        "src_fd",
        "writing",
    )

    def __init__(self, flow: TcpFlow, src: socket.socket, dst: socket.socket) -> None:
        self.flow = flow
        self.src_fd = src.fileno()
        self.dst = dst
        self.dst_fd = dst.fileno()
        self.pipe_r, self.pipe_w = _pipe()
        self.pending = 0  # bytes in the pipe
        self.eof = False
        self.shut = False
        self.reading = False
        self.writing = False

    def pump(self) -> None:
        """Move what can move now, then register for what it waits on."""
        pending = self.pending
        try:
            for _ in range(ROUNDS_PER_EVENT):
                if pending:
                    try:
                        pending -= os.splice(self.pipe_r, self.dst_fd, pending, flags=SPLICE_FLAGS)
                    except BlockingIOError:
                        break  # destination full: wait until it is writable
                    if pending:
                        continue
                # The pipe is empty here, so EAGAIN below means "source empty", never "pipe full".
                try:
                    moved = os.splice(
                        self.src_fd, self.pipe_w, SPLICE_REQUEST_BYTES, flags=SPLICE_FLAGS
                    )
                except BlockingIOError:
                    break
                if moved == 0:
                    self.eof = True
                    break
                pending = moved
        except OSError as exc:
            self.pending = pending
            self.flow.abort(exc)
            return
        self.pending = pending
        self.register()

    def register(self) -> None:
        """Read while the pipe is empty, else wait for the destination; pass EOF on."""
        loop = self.flow.loop
        want_write = self.pending > 0
        want_read = not want_write and not self.eof
        if want_read != self.reading:
            if want_read:
                loop.add_reader(self.src_fd, self.pump)
            else:
                loop.remove_reader(self.src_fd)
            self.reading = want_read
        if want_write != self.writing:
            if want_write:
                loop.add_writer(self.dst_fd, self.pump)
            else:
                loop.remove_writer(self.dst_fd)
            self.writing = want_write
        if self.eof and not self.pending and not self.shut:
            self.shut = True
            try:
                self.dst.shutdown(socket.SHUT_WR)
            except OSError as exc:
                self.flow.abort(exc)
                return
            self.flow.half_closed()

    def release(self) -> None:
        """Unregister and close the pipe (the sockets belong to the flow)."""
        loop = self.flow.loop
        if self.reading:
            loop.remove_reader(self.src_fd)
            self.reading = False
        if self.writing:
            loop.remove_writer(self.dst_fd)
            self.writing = False
        os.close(self.pipe_r)
        os.close(self.pipe_w)


class TcpFlow:
    """One relayed connection: connecting to the target, then two spliced directions."""

    __slots__ = (
        "client",
        "closed",
        "directions",
        "loop",
        "relay",
        "timer",
        "upstream",
    )

    def __init__(self, relay: TcpRelay, client: socket.socket, upstream: socket.socket) -> None:
        self.relay = relay
        self.loop = relay.loop
        self.client = client
        self.upstream = upstream
        self.directions: tuple[_Direction, ...] = ()
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False

    def connect(self, address: tuple[str, int]) -> None:
        """Start the non-blocking connect to the internal client."""
        code = self.upstream.connect_ex(address)
        if code == 0:
            self._relay()
        elif code == errno.EINPROGRESS:
            self.loop.add_writer(self.upstream.fileno(), self._connected)
            self.timer = self.loop.call_later(CONNECT_TIMEOUT_S, self._connect_failed, None)
        else:
            self._connect_failed(code)

    def _connected(self) -> None:
        self.loop.remove_writer(self.upstream.fileno())
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        code = self.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._connect_failed(code)
        else:
            self._relay()

    def _connect_failed(self, code: int | None) -> None:
        if code is None:  # the timer fired: still connecting
            self.loop.remove_writer(self.upstream.fileno())
            self.timer = None
        self.relay.stats.connect_failed += 1
        log.debug(
            "connect to %s:%d failed: %s",
            self.relay.target,
            self.relay.target_port,
            "timeout" if code is None else os.strerror(code),
        )
        self.close(reset=True)

    def _relay(self) -> None:
        try:
            forward = _Direction(self, self.client, self.upstream)
        except OSError as exc:
            self.abort(exc)
            return
        try:
            backward = _Direction(self, self.upstream, self.client)
        except OSError as exc:
            os.close(forward.pipe_r)
            os.close(forward.pipe_w)
            self.abort(exc)
            return
        self.directions = (forward, backward)
        forward.register()
        if not self.closed:
            backward.register()

    def half_closed(self) -> None:
        """One direction finished cleanly; the flow ends when both have."""
        if all(d.shut for d in self.directions):
            self.close(reset=False)

    def abort(self, exc: OSError | None = None) -> None:
        """Reset both sides (an error, a removal, or the relay closing)."""
        if not self.closed:
            self.relay.stats.reset += 1
            if exc is not None:
                log.debug("flow reset: %s", exc)
        self.close(reset=True)

    def close(self, *, reset: bool) -> None:
        """Release everything the flow holds; idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.loop.remove_writer(self.upstream.fileno())
        for direction in self.directions:
            direction.release()
        if reset:
            _reset_close(self.client)
            _reset_close(self.upstream)
        else:
            self.client.close()
            self.upstream.close()
        self.relay.forget(self)


class TcpRelay:
    """The relay of one TCP mapping: admits connections and owns their flows."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        target: IPv4Address,
        target_port: int,
        remote_host: IPv4Address | None,
        max_flows: int,
        budget: FlowBudget,
        stats: TcpStats,
    ) -> None:
        self.loop = loop
        self.target = target
        self.target_port = target_port
        self._address = (str(target), target_port)
        self._remote = None if remote_host is None else str(remote_host)
        self.max_flows = max_flows
        self.budget = budget
        self.stats = stats
        self.flows: set[TcpFlow] = set()
        self.listeners: list[TcpListener] = []
        self.closed = False

    def set_listeners(self, listeners: list[TcpListener]) -> None:
        """Accept from exactly these listeners (flows accepted earlier go on)."""
        for listener in self.listeners:
            if listener not in listeners and listener.relay is self:
                listener.detach()
        self.listeners = listeners
        for listener in listeners:
            listener.attach(self)

    def admit(self, client: socket.socket, peer_ip: str) -> None:
        """Relay a freshly accepted connection, or reset it when a limit says no."""
        if self._remote is not None and peer_ip != self._remote:
            self.stats.refused_remote += 1
            _reset_close(client)
            return
        if len(self.flows) >= self.max_flows or not self.budget.take():
            self.stats.refused_limit += 1
            _reset_close(client)
            return
        try:
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            self.budget.give()
            self.stats.connect_failed += 1
            log.warning("no socket for a relayed connection: %s", exc)
            _reset_close(client)
            return
        client.setblocking(False)
        upstream.setblocking(False)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # dead peers end flows
        self.stats.accepted += 1
        flow = TcpFlow(self, client, upstream)
        self.flows.add(flow)
        flow.connect(self._address)

    def forget(self, flow: TcpFlow) -> None:
        """Called by a flow when it has closed."""
        if flow in self.flows:
            self.flows.remove(flow)
            self.budget.give()

    def close(self) -> None:
        """Stop accepting and reset every flow at once."""
        self.closed = True
        self.set_listeners([])
        for flow in list(self.flows):
            flow.abort()
