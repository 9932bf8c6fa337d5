"""One error tree, mirroring Docker's ``errdefs``.

Every error the engine raises to a caller is one of these. Each carries the HTTP status the
Docker Engine API answers with and the message exactly as dockerd writes it, so the API layer
only has to serialise ``{"message": str(err)}`` with ``err.status``.

Foreign errors (OSError, a runtime's stderr, netlink errors) are translated into this tree at
the driver boundary; nothing above the drivers sees them.
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "DockerError",
    "Forbidden",
    "InvalidParameter",
    "NotFound",
    "NotImplementedYet",
    "NotModified",
    "SystemError",
    "Unavailable",
]


class DockerError(Exception):
    """Base of every error the engine reports; ``status`` is the HTTP status dockerd uses."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class NotFound(DockerError):
    """404: no such container, image, network..."""

    status = 404


class InvalidParameter(DockerError):
    """400: the request is malformed or asks for something impossible."""

    status = 400


class Conflict(DockerError):
    """409: the request conflicts with the object's current state."""

    status = 409


class Forbidden(DockerError):
    """403: the operation is not allowed on this object."""

    status = 403


class NotModified(DockerError):
    """304: nothing to do (already running, already stopped)."""

    status = 304


class NotImplementedYet(DockerError):
    """What the engine does not do (yet), said plainly (501)."""

    status = 501


class SystemError(DockerError):
    """500: the daemon failed for a reason that is not the caller's fault."""

    status = 500


class Unavailable(DockerError):
    """503: the daemon cannot answer now (errdefs' unavailable): it is shutting down."""

    status = 503
