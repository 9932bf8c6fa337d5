"""Random identifiers (container, network, exec and endpoint IDs, names of the moment): the
kernel's randomness, as :func:`secrets.token_hex` gives it, read a page at a time.

One ``getrandom`` per ID cost several microseconds on a busy machine (each start makes an
endpoint ID, each create a container ID); here one read serves a hundred IDs. A forked child
starts with an empty buffer, never its parent's.
"""

from __future__ import annotations

import os
import threading

__all__ = ["random_hex"]

_PAGE = 4096


class _Buffered:
    __slots__ = ("_bytes", "_lock", "_offset")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes = b""
        self._offset = 0

    def take(self, count: int) -> bytes:
        with self._lock:
            if self._offset + count > len(self._bytes):
                self._bytes, self._offset = os.urandom(max(_PAGE, count)), 0
            chunk = self._bytes[self._offset : self._offset + count]
            self._offset += count
            return chunk

    def forget(self) -> None:
        self._lock = threading.Lock()
        self._bytes, self._offset = b"", 0


_buffer = _Buffered()
os.register_at_fork(after_in_child=_buffer.forget)


def random_hex(count: int) -> str:
    """``count`` random bytes from the kernel, in hex (as ``secrets.token_hex(count)``); no
    byte is ever handed out twice."""
    if count < 0:
        raise ValueError(f"a negative count of random bytes: {count}")
    return _buffer.take(count).hex()
