"""Detach keys: the sequence with which an attached client leaves a container's process
running (dockerd's ``copyEscapable``). Pure: the engine's attach and exec sessions, and the
``Client``'s, find it the same way."""

from __future__ import annotations

from . import errors

__all__ = [
    "DEFAULT_DETACH_SEQUENCE",
    "DetachMatcher",
    "DetachableInput",
    "attach_detach_keys",
    "detach_keys_for",
    "detach_sequence",
]


class DetachMatcher:
    """Finds the detach sequence in an attached client's input: what comes before it goes on;
    a partial match is held until it is known (then let through if it was not the sequence)."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self._held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """The input to pass on, and whether the client detached (the rest is dropped)."""
        out = bytearray()
        for value in data:
            byte = bytes([value])
            if self.keys.startswith(self._held + byte):
                self._held += byte
                if self._held == self.keys:
                    self._held = b""
                    return bytes(out), True
                continue
            out += self._held
            self._held = b""
            if self.keys.startswith(byte):
                self._held = byte
            else:
                out += byte
        return bytes(out), False


class DetachableInput:
    """An attached client's input as dockerd's ``copyEscapable`` passes it on: what comes
    before the detach keys goes on (a partial sequence held until it is known), nothing once
    they came. ``keys``: b"" for none."""

    def __init__(self, keys: bytes) -> None:
        self._matcher = DetachMatcher(keys) if keys else None
        #: The detach keys came: the attachment ends, the process runs on.
        self.detached = False

    @property
    def keys(self) -> bytes:
        return self._matcher.keys if self._matcher is not None else b""

    def take(self, data: bytes) -> bytes:
        """What of ``data`` goes on to the process."""
        if self.detached:
            return b""
        if self._matcher is not None:
            data, self.detached = self._matcher.feed(data)
        return data


#: dockerd's ``defaultEscapeSequence``: ctrl-p, ctrl-q.
DEFAULT_DETACH_SEQUENCE = b"\x10\x11"


def detach_keys_for(keys: bytes | str, tty: bool) -> bytes:
    """The sequence that detaches an attached client, as dockerd's ``copyEscapable``: only
    with a terminal (without one, input goes through untouched), the client's keys, else
    ctrl-p ctrl-q. ``keys`` as given (checked by the caller) or already parsed."""
    if not tty:
        return b""
    if isinstance(keys, str):
        keys = detach_sequence(keys) if keys else b""
    return keys or DEFAULT_DETACH_SEQUENCE


def detach_sequence(keys: str) -> bytes:
    """dockerd's ``term.ToBytes``: ``ctrl-<letter>``... or single characters, comma-separated."""
    out = bytearray()
    for key in keys.split(","):
        key = key.strip()
        if len(key) == 1:
            out.append(ord(key))
        elif key.startswith("ctrl-") and len(key) == 6:
            char = key[5].lower()
            if "a" <= char <= "z":
                out.append(ord(char) - ord("a") + 1)
            elif char in "@[\\]^_":
                out.append(ord(char.upper()) - ord("@"))
            else:
                raise errors.InvalidParameter(f"Unknown character: '{key}'")
        else:
            raise errors.InvalidParameter(f"Unknown character: '{key}'")
    return bytes(out)


def attach_detach_keys(keys: str) -> bytes:
    """An attach's ``detachKeys`` parsed (b"" for none), with dockerd's 400 for a bad one."""
    try:
        return detach_sequence(keys) if keys else b""
    except errors.InvalidParameter:
        raise errors.InvalidParameter(f"Invalid detach keys ({keys}) provided") from None
