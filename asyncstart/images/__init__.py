"""Root filesystems: each container's writable layer, mounted on start, unmounted on exit."""

from .base import MountDriver
from .fake import FakeMounter

__all__ = ["FakeMounter", "MountDriver"]
