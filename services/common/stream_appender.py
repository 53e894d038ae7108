"""Pipelined ``XADD`` over one plain socket: the rollout writer's hot loop.

redis-py spends ~20 µs of Python per pipelined command (argument encoding, command objects and,
mostly, parsing each reply); at thousands of served steps per second that CPU comes out of the
policy server's GIL. Here a batch of entries becomes one RESP buffer built with a few byte joins,
goes out in one ``sendall``, and the replies (one bulk string id each) are counted, not parsed
into objects — about 8 µs per 12 KB entry. Reads, trims and everything else stay on redis-py.

Connection URLs as redis-py reads them: ``redis://[[user]:password@]host[:port][/db]``,
``rediss://`` (TLS, system CA bundle) and ``unix:///path?db=N``.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence

from redis.connection import parse_url


class StreamWriteError(OSError):
    """Redis refused an entry (an error reply), or the connection broke mid-batch.

    An ``OSError`` so the writer treats it like an outage: the batch goes to the spool, whose
    replay skips whatever did reach the stream.
    """


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(_bulk(a) for a in args)


class StreamAppender:
    """Appends ``(field -> bytes)`` entries to one stream with ``XADD <stream> MAXLEN ~ N *``."""

    def __init__(self, url: str, stream: str, maxlen: int, fields: Sequence[str],
                 connect_timeout: float = 1.0, timeout: float = 2.0) -> None:
        self.url = url
        self.options = parse_url(url)
        self.connect_timeout, self.timeout = connect_timeout, timeout
        # Everything before the field values is the same for every entry: built once.
        self._fields = [_bulk(f.encode()) for f in fields]
        self._head = b"*%d\r\n" % (6 + 2 * len(fields)) + b"".join(
            _bulk(a) for a in (b"XADD", stream.encode(), b"MAXLEN", b"~", b"%d" % maxlen, b"*"))
        self._sock: socket.socket | None = None
        self._pending = b""  # bytes of replies read past the ones counted so far

    # -- connection ------------------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        opts = self.options
        if "path" in opts:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.connect_timeout)
            sock.connect(opts["path"])
        else:
            sock = socket.create_connection((opts.get("host", "localhost"), int(opts.get("port", 6379))),
                                            timeout=self.connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.url.startswith("rediss://"):
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=opts.get("host"))
        sock.settimeout(self.timeout)
        self._sock, self._pending = sock, b""
        try:
            if opts.get("password"):
                auth = [b"AUTH"] + ([opts["username"].encode()] if opts.get("username") else [])
                self._call(_command(*auth, opts["password"].encode()))
            if int(opts.get("db") or 0):
                self._call(_command(b"SELECT", b"%d" % int(opts["db"])))
        except BaseException:
            self.close()
            raise
        return sock

    def _call(self, command: bytes) -> None:
        self._sock.sendall(command)
        self._read_replies(1)

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    # -- writing ---------------------------------------------------------------------------------

    def append(self, entries: Sequence[Sequence[bytes]]) -> None:
        """XADD every entry (its values in the order of ``fields``) in one round trip.

        Raises ``StreamWriteError`` (an ``OSError``) or another ``OSError`` on any failure; some
        entries of the batch may have been written by then.
        """
        if not entries:
            return
        sock = self._sock or self._connect()
        parts = []
        for values in entries:
            parts.append(self._head)
            for field, value in zip(self._fields, values):
                parts += (field, b"$%d\r\n" % len(value), value, b"\r\n")
        try:
            sock.sendall(b"".join(parts))
            self._read_replies(len(entries))
        except BaseException:
            self.close()  # the reply stream is out of step now: start over on a new connection
            raise

    def _read_replies(self, count: int) -> None:
        """Consume ``count`` replies; raise on the first error reply among them."""
        buf, pos, seen, error = self._pending, 0, 0, None
        while seen < count:
            end = buf.find(b"\r\n", pos)
            kind = buf[pos : pos + 1]
            if end >= 0 and kind == b"$":  # bulk string (an entry id): skip its body
                length = int(buf[pos + 1 : end])
                stop = end + 2 + max(length, 0) + (2 if length >= 0 else 0)
                if len(buf) < stop:
                    end = -1  # the body is still on its way
            if end < 0:
                buf, pos = buf[pos:] + self._recv(), 0
                continue
            if kind == b"$":
                pos = stop
            elif kind in (b"+", b":"):
                pos = end + 2
            elif kind == b"-":
                error = error or buf[pos + 1 : end].decode(errors="replace")
                pos = end + 2
            else:
                raise StreamWriteError(f"unexpected reply from redis: {buf[pos : pos + 40]!r}")
            seen += 1
        self._pending = buf[pos:]
        if error is not None:
            raise StreamWriteError(f"redis refused an entry: {error}")

    def _recv(self) -> bytes:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise StreamWriteError("redis closed the connection")
        return chunk
