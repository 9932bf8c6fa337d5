"""Names for containers created without one, as dockerd makes them (``adjective_noun``)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

__all__ = ["generate_name"]

_ADJECTIVES = (
    "brisk", "calm", "deft", "eager", "fond", "glad", "hardy", "keen", "lucid", "merry",
    "nimble", "plucky", "quiet", "rapid", "sober", "tidy", "vivid", "witty", "zesty", "bold",
)  # fmt: skip
_NOUNS = (
    "otter", "heron", "badger", "falcon", "lynx", "marten", "osprey", "puffin", "raven",
    "salmon", "tern", "vole", "wren", "yak", "bison", "crane", "dingo", "egret", "finch", "gecko",
)  # fmt: skip


def generate_name(taken: Callable[[str], bool]) -> str:
    """A free ``/adjective_noun`` name. Like dockerd: a few plain tries, then a growing numeric
    suffix, so the space of names never runs out however many containers there are."""
    for attempt in itertools.count():
        name = f"/{random.choice(_ADJECTIVES)}_{random.choice(_NOUNS)}"
        if attempt >= 3:
            name += str(random.randrange(10 ** (attempt - 2)))
        if not taken(name):
            return name
    raise AssertionError("unreachable")
