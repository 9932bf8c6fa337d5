"""The start saga: run the steps in order; on failure, undo the done ones in reverse order.

A :class:`Saga` knows the steps, each with the lifecycle state it runs in, and times and logs
every phase (``phase.complete`` at debug, ``phase.failed`` at warning). It never changes the
container's state itself: before each step it calls the actor's ``enter(state)``, which moves
the lifecycle. A failure is raised as :class:`StartFailed`, carrying the steps done so far, so
the actor can settle the container first and then have them undone (:meth:`Saga.undo`) — the
same undo as at the process's exit. A foreign exception that a driver let through is still a
failed start (500), never a wedged container; a cancellation undoes what was done before it
propagates.

Starts take turns to prepare. The steps before the last one (which has the runtime create the
process) are the engine's own work: CPU in this process and short kernel calls. Run for fifty
starts at once, they would all prepare side by side and none would reach the runtime until most
had prepared, leaving CPUs idle while the runtime's processes waited to exist. With a few
preparing at a time, in arrival order, each start reaches the runtime as soon as it can, and the
runtime's work overlaps the next starts' preparation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import anyio

from . import errors
from ._log import get_logger
from .lifecycle import State
from .steps import StartContext, Step

__all__ = ["Saga", "StartFailed"]

log = get_logger("asyncstart.saga")


class StartFailed(Exception):
    """A step failed with ``error``; ``done`` are the steps to undo, in the order they ran."""

    def __init__(self, error: errors.DockerError, done: list[Step]) -> None:
        super().__init__(error.message)
        self.error = error
        self.done = done


class Saga:
    def __init__(self, steps: Sequence[tuple[State, Step]], *, preparing: int = 0) -> None:
        """``preparing``: how many starts may run the preparing steps (all but the last) at
        once; the others wait their turn, first come first served (0: no limit)."""
        #: Each step with the lifecycle state it runs in.
        self.steps = tuple(steps)
        # (Each with its state's name, for the durations: split once, not at every start.)
        named = [(phase, phase.value, step) for phase, step in self.steps]
        self._preparing, self._last = tuple(named[:-1]), tuple(named[-1:])
        self._turns = anyio.Semaphore(preparing) if preparing > 0 else None

    async def run(self, ctx: StartContext, enter: Callable[[State], None]) -> list[Step]:
        """Run every step; return them (all done) or raise :class:`StartFailed`. A start
        waits for its turn to prepare before it enters its first phase."""
        done: list[Step] = []
        debug = log.debug_enabled()  # (asked once a start, not once a phase)
        try:
            await self._take_turn()
            try:
                await self._run_steps(self._preparing, ctx, enter, done, debug)
            finally:
                if self._turns is not None:
                    self._turns.release()
            await self._run_steps(self._last, ctx, enter, done, debug)
        except errors.DockerError as exc:
            raise StartFailed(exc, done) from exc
        except Exception as exc:
            log.exception("phase.untranslated_error", container_id=ctx.record.id)
            error = errors.SystemError(f"{type(exc).__name__}: {exc}")
            raise StartFailed(error, done) from exc
        except BaseException:
            # Cancelled (the daemon is closing): still give back what was taken.
            with anyio.CancelScope(shield=True):
                await self.undo(ctx, done)
            raise
        return done

    async def _take_turn(self) -> None:
        """Wait for a turn to prepare, if they are limited. A free one is taken at once,
        without a pass through the event loop (a start already makes several); a start
        queues only while every turn is taken (a released turn goes to the first in line,
        so none is free while any waits)."""
        if self._turns is None:
            return
        try:
            self._turns.acquire_nowait()
        except anyio.WouldBlock:
            await self._turns.acquire()

    async def _run_steps(
        self,
        steps: Sequence[tuple[State, str, Step]],
        ctx: StartContext,
        enter: Callable[[State], None],
        done: list[Step],
        debug: bool,
    ) -> None:
        durations = ctx.durations
        for phase, name, step in steps:
            enter(phase)
            began = time.perf_counter()
            try:
                await step.do(ctx)
            except errors.DockerError as exc:
                log.warning(
                    "phase.failed",
                    container_id=ctx.record.id,
                    phase=step.name,
                    state=name,
                    duration_ms=round((time.perf_counter() - began) * 1000, 3),
                    error=exc.message,
                )
                raise
            duration = time.perf_counter() - began
            durations[name] = durations.get(name, 0.0) + duration
            done.append(step)
            if debug:
                log.debug(
                    "phase.complete",
                    container_id=ctx.record.id,
                    phase=step.name,
                    state=name,
                    duration_ms=round(duration * 1000, 3),
                )

    async def undo(self, ctx: StartContext, done: list[Step]) -> None:
        """Undo ``done`` in reverse order; a failing undo is logged and the rest still run."""
        while done:
            step = done.pop()
            try:
                await step.undo(ctx)
            except errors.DockerError as exc:
                log.error(
                    "phase.undo_failed",
                    container_id=ctx.record.id,
                    phase=step.name,
                    error=exc.message,
                )
