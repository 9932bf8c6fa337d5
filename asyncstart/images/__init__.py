"""Images and root filesystems: the image store, and each container's writable layer, mounted
on start, unmounted on exit."""

from .base import MountDriver
from .fake import FakeImageStore, FakeMounter
from .store import ImageSource, ImageStore, RemovalPlan, RemovalPolicy, parse_reference

__all__ = [
    "FakeImageStore",
    "FakeMounter",
    "ImageSource",
    "ImageStore",
    "MountDriver",
    "RemovalPlan",
    "RemovalPolicy",
    "parse_reference",
]
