"""OCI runtimes behind one interface; see :mod:`asyncstart.runtime.base`."""

from .base import (
    Bundle,
    Runtime,
    RuntimeBackend,
    RuntimeFailure,
    StateInfo,
    Stdio,
    translate_start_error,
)
from .fake import FakeRuntime

__all__ = [
    "Bundle",
    "FakeRuntime",
    "Runtime",
    "RuntimeBackend",
    "RuntimeFailure",
    "StateInfo",
    "Stdio",
    "translate_start_error",
]
