"""Container networking: a namespace, an address and the files that name them."""

from .base import NetworkDriver
from .fake import FakeNetwork

__all__ = ["FakeNetwork", "NetworkDriver"]
