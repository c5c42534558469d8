"""A TCP proxy in front of a one-broker cluster that refuses a group's first OffsetFetch
requests with NOT_COORDINATOR, for the whole request (no partition in the answer), as a
coordinator that has just moved answers.

So that a client bootstrapped here connects to the broker through it, the broker's port in
Metadata and FindCoordinator answers is replaced by the proxy's (the same loopback host, so
only a fixed-width int32 changes). Not replaced: KIP-951's broker endpoints in Fetch and
Produce answers, which a broker sends only with a leader error; and a broker that
advertises ``localhost`` may be tried at ::1 first. Plaintext only. Requests always reach the broker, and a refused
request's answer replaces the broker's own, so answers keep their order on a connection.
Other bytes pass untouched. The Kafka protocol's framing (a big-endian int32 size before
each request and answer) and the layouts read here are those of the protocol guide
(kafka.apache.org/protocol); "flexible" versions use varint lengths and tagged fields.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import suppress

METADATA, FIND_COORDINATOR, OFFSET_FETCH = 3, 10, 9
NOT_COORDINATOR = 16
# The first version of each API whose layout is flexible (compact strings, tagged fields).
_FLEXIBLE_FROM = {METADATA: 9, FIND_COORDINATOR: 3, OFFSET_FETCH: 6}


_Asked = tuple[int, int, bytes | None]  # an asked request's api, its version, and the group refused (if)


class _Cursor:
    """Reads a frame's fields in order; ``at`` is the offset of the next one."""

    def __init__(self, frame: bytearray, at: int = 0) -> None:
        self.frame, self.at = frame, at

    def fixed(self, size: int) -> int:
        if self.at + size > len(self.frame):
            raise IndexError(f"a {size}-byte field at {self.at} of a {len(self.frame)}-byte frame")
        value = int.from_bytes(self.frame[self.at:self.at + size], "big", signed=True)
        self.at += size
        return value

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            byte = self.frame[self.at]
            self.at += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def string(self, flexible: bool) -> bytes | None:
        size = self.uvarint() - 1 if flexible else self.fixed(2)
        if size < 0:
            return None
        text = bytes(self.frame[self.at:self.at + size])
        self.at += size
        return text

    def count(self, flexible: bool) -> int:
        return self.uvarint() - 1 if flexible else self.fixed(4)

    def skip_tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # the tag
            self.at += self.uvarint()  # its size, then its bytes


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _compact(text: bytes) -> bytes:
    return _uvarint(len(text) + 1) + text


class CoordinatorRefuser:
    """Listens on loopback and forwards to the broker at ``upstream`` ("host:port").
    ``refuse(group, times)`` makes the next ``times`` OffsetFetch requests for ``group`` be
    answered with NOT_COORDINATOR; ``refused`` counts those answered so, and
    ``offset_fetches`` every OffsetFetch request of each group."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._to_refuse: dict[bytes, int] = {}
        self.refused = 0
        self.offset_fetches: dict[str, int] = {}
        self.misread: list[str] = []  # frames this proxy could not read (passed on unchanged)
        threading.Thread(target=self._accept, name="coordinator-refuser", daemon=True).start()

    def refuse(self, group: str, times: int) -> None:
        with self._lock:
            self._to_refuse[group.encode()] = times

    def close(self) -> None:
        with suppress(OSError):
            self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            broker = socket.create_connection(self._upstream)
            asked: dict[int, _Asked] = {}  # by correlation id; each connection's own
            threading.Thread(target=self._requests, args=(client, broker, asked), daemon=True).start()
            threading.Thread(target=self._answers, args=(broker, client, asked), daemon=True).start()

    def _requests(self, client: socket.socket, broker: socket.socket, asked: dict[int, _Asked]) -> None:
        for frame in _frames(client, broker):
            cursor = _Cursor(frame)
            api, version, correlation = cursor.fixed(2), cursor.fixed(2), cursor.fixed(4)
            if self._cuts(api, version, _Cursor(frame, cursor.at)):
                _cut(client, broker)
                return
            refused = None
            if api == OFFSET_FETCH:
                try:
                    refused = self._refused_group(version, cursor)
                except IndexError as exc:
                    self.misread.append(f"OffsetFetch v{version} request: {exc}")
            asked[correlation] = (api, version, refused)  # before the broker can answer it
            broker.sendall(struct.pack(">i", len(frame)) + frame)

    def _cuts(self, api: int, version: int, cursor: _Cursor) -> bool:
        """Whether to cut the connection at this request instead of passing it on (a
        subclass's fault; ``cursor`` after the correlation id). This proxy cuts none."""
        return False

    def _refused_group(self, version: int, cursor: _Cursor) -> bytes | None:
        """The group of an OffsetFetch request (``cursor`` after its correlation id) if it
        is to be refused; one refusal of that group is then used up."""
        flexible = version >= _FLEXIBLE_FROM[OFFSET_FETCH]
        cursor.string(flexible=False)  # client id: never compact
        if flexible:
            cursor.skip_tags()
        if version >= 8:
            cursor.count(flexible=True)  # the groups asked: librdkafka asks for one
        group = cursor.string(flexible)
        if group is None:
            return None
        with self._lock:
            self.offset_fetches[group.decode()] = self.offset_fetches.get(group.decode(), 0) + 1
            if self._to_refuse.get(group, 0) <= 0:
                return None
            self._to_refuse[group] -= 1
        return group

    def _answers(self, broker: socket.socket, client: socket.socket, asked: dict[int, _Asked]) -> None:
        for frame in _frames(broker, client):
            correlation = _Cursor(frame).fixed(4)
            api, version, refused = asked.pop(correlation, (-1, -1, None))
            try:
                if refused is not None:
                    frame = bytearray(_refusal(correlation, version, refused))
                    with self._lock:
                        self.refused += 1
                elif api in (METADATA, FIND_COORDINATOR):
                    self._point_here(frame, api, version)
            except (IndexError, ValueError) as exc:
                self.misread.append(f"api {api} v{version} answer: {exc}")
            try:
                client.sendall(struct.pack(">i", len(frame)) + frame)
            except OSError:
                return  # the connection was cut (or closed) while its answer was on the way

    def _point_here(self, frame: bytearray, api: int, version: int) -> None:
        """Replace, in place, the broker ports of a Metadata or FindCoordinator answer."""
        flexible = version >= _FLEXIBLE_FROM[api]
        cursor = _Cursor(frame, 4)
        if flexible:
            cursor.skip_tags()  # of the answer's header
        if version >= (3 if api == METADATA else 1):
            cursor.fixed(4)  # throttle time
        if api == METADATA:
            for _ in range(cursor.count(flexible)):
                cursor.fixed(4)  # node id
                self._port_after_host(cursor, flexible)
                if version >= 1:
                    cursor.string(flexible)  # rack
                if flexible:
                    cursor.skip_tags()
        elif version >= 4:
            for _ in range(cursor.count(flexible)):
                cursor.string(flexible)  # the group asked for
                cursor.fixed(4)  # node id
                self._port_after_host(cursor, flexible)
                cursor.fixed(2)  # error code
                cursor.string(flexible)  # error message
                cursor.skip_tags()
        else:
            cursor.fixed(2)  # error code
            if version >= 1:
                cursor.string(flexible)  # error message
            cursor.fixed(4)  # node id
            self._port_after_host(cursor, flexible)

    def _port_after_host(self, cursor: _Cursor, flexible: bool) -> None:
        cursor.string(flexible)  # the host: loopback, as the proxy's
        if cursor.fixed(4) == self._upstream[1]:
            cursor.frame[cursor.at - 4:cursor.at] = struct.pack(">i", self.port)


def _refusal(correlation: int, version: int, group: bytes) -> bytes:
    """An OffsetFetch answer of ``version`` refusing the whole request with NOT_COORDINATOR:
    no partition in it, the error where the version puts a request's (or its group's)."""
    head = struct.pack(">i", correlation)
    error = struct.pack(">h", NOT_COORDINATOR)
    throttle = struct.pack(">i", 0)
    if version >= 8:  # header tags; throttle; groups: [group id, no topics, error, tags]; tags
        return head + b"\0" + throttle + _uvarint(2) + _compact(group) + _uvarint(1) + error + b"\0" + b"\0"
    if version >= 6:  # header tags; throttle; no topics; error; tags
        return head + b"\0" + throttle + _uvarint(1) + error + b"\0"
    if version >= 2:
        return head + (throttle if version >= 3 else b"") + struct.pack(">i", 0) + error
    raise ValueError(f"OffsetFetch v{version} has no request-level error to refuse with")


def _cut(*sides: socket.socket) -> None:
    """Close ``sides`` as a dropped connection does; shut down first, which (unlike a close)
    also ends a read another thread is blocked in."""
    for side in sides:
        with suppress(OSError):
            side.shutdown(socket.SHUT_RDWR)
        with suppress(OSError):
            side.close()


def _frames(source: socket.socket, sink: socket.socket) -> Iterator[bytearray]:
    """Each whole frame read from ``source`` (its body, as a bytearray); when either side
    closes, both are closed."""
    try:
        while True:
            size = _read(source, 4)
            if size is None:
                return
            body = _read(source, struct.unpack(">i", size)[0])
            if body is None:
                return
            yield body
    except OSError:
        return
    finally:
        for side in (source, sink):
            with suppress(OSError):
                side.close()


def _read(source: socket.socket, size: int) -> bytearray | None:
    data = bytearray()
    while len(data) < size:
        chunk = source.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
