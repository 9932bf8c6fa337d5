"""trio-asyncio, in place only while a daemon runs under trio.

pyroute2's netlink API is asyncio code; under trio it runs on a trio-asyncio loop. Importing
``trio_asyncio`` changes asyncio for the whole process: it replaces the event-loop policy and
``asyncio``'s loop getters, so that from then on ``asyncio.run`` builds trio-asyncio's
``SyncTrioEventLoop`` and every ``asyncio.get_running_loop()`` asks trio first. An embedded
engine must leave the process as it found it.

So trio-asyncio is imported here once, and what its import changed in ``asyncio``,
``asyncio.events`` and ``asyncio.tasks`` is recorded (found by comparison, not by a list of
names). The changes stay in place while at least one daemon runs under trio; the last one to
leave puts back what the import found and takes trio-asyncio out of ``sys.modules``, so that a
later ``import trio_asyncio`` by the program patches afresh. A program that had imported
trio-asyncio itself owns its changes: they are used as they are and never undone. A daemon
under asyncio needs none of this and never imports trio-asyncio.

What this cannot cover: an asyncio loop made in another thread *while* a trio daemon runs gets
trio-asyncio's loop, and loses its patches when the daemon leaves. A program that runs asyncio
and trio in threads side by side imports trio-asyncio itself first.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import asyncio.tasks
import importlib
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

__all__ = ["open_trio_asyncio_loop", "run_asyncio"]

T = TypeVar("T")

_PATCHED_MODULES = (asyncio, asyncio.events, asyncio.tasks)
_ABSENT = object()


@dataclass
class _Patches:
    """What importing trio-asyncio changed: the values before and after, per attribute."""

    before: list[tuple[ModuleType, str, object]]
    after: list[tuple[ModuleType, str, object]]
    policy_before: asyncio.AbstractEventLoopPolicy
    policy_after: asyncio.AbstractEventLoopPolicy
    set_policy: Callable[[asyncio.AbstractEventLoopPolicy], None]
    modules: dict[str, ModuleType]  # trio_asyncio and its submodules, as sys.modules had them

    def apply(self, values: list[tuple[ModuleType, str, object]]) -> None:
        for module, name, value in values:
            if value is _ABSENT:
                vars(module).pop(name, None)
            else:
                setattr(module, name, value)


class _TrioAsyncio:
    """The process's trio-asyncio: imported once; its patches counted in and out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._module: ModuleType | None = None
        self._patches: _Patches | None = None  # None: the program's own, never undone

    def enter(self) -> ModuleType:
        with self._lock:
            if self._module is None or self._owned_by_program():
                self._module, self._patches = _import()
            elif self._users == 0 and self._patches is not None:
                self._patches.apply(self._patches.after)
                self._patches.set_policy(self._patches.policy_after)
                sys.modules.update(self._patches.modules)
            self._users += 1
            return self._module

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._patches is not None:
                self._patches.apply(self._patches.before)
                self._patches.set_policy(self._patches.policy_before)
                for name in self._patches.modules:
                    sys.modules.pop(name, None)

    def _owned_by_program(self) -> bool:
        """Whether the program imported trio-asyncio afresh since the last daemon left."""
        current = sys.modules.get("trio_asyncio")
        return self._users == 0 and current is not None and current is not self._module

    @property
    def module(self) -> ModuleType:
        assert self._module is not None, "no daemon runs under trio"
        return self._module


def _import() -> tuple[ModuleType, _Patches | None]:
    if "trio_asyncio" in sys.modules:
        return sys.modules["trio_asyncio"], None
    get_policy = asyncio.events.get_event_loop_policy
    set_policy = asyncio.events.set_event_loop_policy
    policy_before = get_policy()
    snapshot = [dict(vars(module)) for module in _PATCHED_MODULES]
    module = importlib.import_module("trio_asyncio")
    before: list[tuple[ModuleType, str, object]] = []
    after: list[tuple[ModuleType, str, object]] = []
    for target, old in zip(_PATCHED_MODULES, snapshot, strict=True):
        for name, value in vars(target).items():
            if old.get(name, _ABSENT) is not value:
                before.append((target, name, old.get(name, _ABSENT)))
                after.append((target, name, value))
    modules = {
        name: loaded
        for name, loaded in sys.modules.items()
        if name == "trio_asyncio" or name.startswith("trio_asyncio.")
    }
    patches = _Patches(before, after, policy_before, get_policy(), set_policy, modules)
    return module, patches


_TRIO_ASYNCIO = _TrioAsyncio()


@asynccontextmanager
async def open_trio_asyncio_loop() -> AsyncIterator[None]:
    """Under trio: trio-asyncio in place and a loop open for the duration."""
    module = _TRIO_ASYNCIO.enter()
    try:
        async with module.open_loop():
            yield
    finally:
        _TRIO_ASYNCIO.leave()


async def run_asyncio(call: Callable[[], Awaitable[T]]) -> T:
    """Await an asyncio coroutine function on the loop :func:`open_trio_asyncio_loop` opened."""
    adapter: Any = _TRIO_ASYNCIO.module.aio_as_trio(call)
    result: T = await adapter()
    return result
