"""The actor's parts on their own: the saga's do/undo and the mailbox's replies and timers."""

from __future__ import annotations

import anyio
import pytest

from asyncstart import FakeClock, errors
from asyncstart.config import Config, HostConfig
from asyncstart.lifecycle import Lifecycle, LifecycleEvent, Request, State
from asyncstart.mailbox import (
    SERVING_TASK,
    Call,
    Dispatcher,
    Mailbox,
    Reply,
    TimerFired,
    Timers,
    Waiters,
)
from asyncstart.record import ContainerRecord
from asyncstart.saga import Saga, StartFailed
from asyncstart.steps import StartContext

pytestmark = pytest.mark.anyio


class _Step:
    """A step that records its do and undo in ``journal`` and fails on demand."""

    def __init__(self, name: str, journal: list[str], fail: BaseException | None = None) -> None:
        self.name = name
        self.journal = journal
        self.fail = fail

    async def do(self, ctx: StartContext) -> None:
        self.journal.append(f"do {self.name}")
        if self.fail is not None:
            raise self.fail

    async def undo(self, ctx: StartContext) -> None:
        self.journal.append(f"undo {self.name}")
        if self.name == "b":
            raise errors.SystemError("undo of b failed")  # the rest still run


def _ctx(who: str = "c") -> StartContext:
    record = ContainerRecord(
        id=who * 64, name="/c", created="", image="", config=Config(), host_config=HostConfig()
    )
    return StartContext(record)


def _saga(journal: list[str], fail_at: str = "", fail: BaseException | None = None) -> Saga:
    phases = (State.MOUNTING, State.NETWORKING, State.SPEC_READY, State.SPEC_READY)
    steps = [
        (phase, _Step(name, journal, fail if name == fail_at else None))
        for phase, name in zip(phases, "abcd", strict=True)
    ]
    return Saga(steps)


async def test_the_saga_runs_every_step_in_its_phase() -> None:
    journal: list[str] = []
    lifecycle = Lifecycle("c" * 64)
    lifecycle.handle(LifecycleEvent.START)
    entered: list[State] = []

    def enter(phase: State) -> None:
        entered.append(phase)
        lifecycle.enter_phase(phase)

    ctx = _ctx()
    done = await _saga(journal).run(ctx, enter)
    assert journal == ["do a", "do b", "do c", "do d"]
    assert [step.name for step in done] == ["a", "b", "c", "d"]
    assert lifecycle.state is State.SPEC_READY and entered[0] is State.MOUNTING
    assert set(ctx.durations) == {"mounting", "networking", "spec-ready"}


@pytest.mark.parametrize(
    ("fail", "kind"),
    [(errors.InvalidParameter("no such file"), errors.InvalidParameter), (OSError(5, "EIO"), None)],
)
async def test_a_failed_step_hands_back_what_was_done(
    fail: BaseException, kind: type[errors.DockerError] | None
) -> None:
    journal: list[str] = []
    saga = _saga(journal, "c", fail)
    ctx = _ctx()
    with pytest.raises(StartFailed) as failed:
        await saga.run(ctx, lambda phase: None)
    # A foreign error a driver let through is still a failed start: a 500 naming it.
    assert isinstance(failed.value.error, kind or errors.SystemError)
    if kind is None:
        assert failed.value.error.message == "OSError: [Errno 5] EIO"
    assert [step.name for step in failed.value.done] == ["a", "b"]
    assert journal == ["do a", "do b", "do c"], "nothing is undone before the actor asks"
    await saga.undo(ctx, failed.value.done)
    assert journal[3:] == ["undo b", "undo a"], "reverse order, past a failing undo"
    assert failed.value.done == []


async def test_a_cancelled_saga_undoes_before_it_propagates() -> None:
    journal: list[str] = []
    saga = _saga(journal)
    blocked = anyio.Event()

    async def block(ctx: StartContext) -> None:
        journal.append("do c")
        blocked.set()
        await anyio.sleep_forever()

    saga.steps[2][1].do = block  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(saga.run, _ctx(), lambda phase: None)
        await blocked.wait()
        tg.cancel_scope.cancel()
    assert journal == ["do a", "do b", "do c", "undo b", "undo a"]


class _Held:
    """A step that journals which start ran it, and waits where ``hold`` says."""

    def __init__(self, name: str, journal: list[str], hold: dict[str, anyio.Event]) -> None:
        self.name, self.journal, self.hold = name, journal, hold

    async def do(self, ctx: StartContext) -> None:
        step = f"{ctx.record.id[0]}{self.name}"
        self.journal.append(step)
        if step in self.hold:
            await self.hold[step].wait()
        if step == "yb":
            raise errors.SystemError("y cannot prepare")

    async def undo(self, ctx: StartContext) -> None:
        self.journal.append(f"undo {ctx.record.id[0]}{self.name}")


async def test_starts_take_turns_to_prepare_in_the_order_they_came() -> None:
    """One turn: a start prepares (every step but the last, the runtime's) once the one
    before it has, while that one's last step runs; a failed preparation passes the turn on."""
    journal: list[str] = []
    hold = {name: anyio.Event() for name in ("xb", "xc", "zc")}
    phases = (State.MOUNTING, State.NETWORKING, State.SPEC_READY)
    saga = Saga(
        [(phase, _Held(name, journal, hold)) for phase, name in zip(phases, "abc", strict=True)],
        preparing=1,
    )
    failed: list[str] = []

    async def start(who: str) -> None:
        try:
            await saga.run(_ctx(who), lambda phase: None)
        except StartFailed as failure:
            failed.append(failure.error.message)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for who in "xyz":
                tg.start_soon(start, who)
                await anyio.wait_all_tasks_blocked()
            assert journal == ["xa", "xb"], "y and z wait for x to prepare"
            hold["xb"].set()
            await anyio.wait_all_tasks_blocked()
            assert journal == ["xa", "xb", "xc", "ya", "yb", "za", "zb", "zc"]
            assert failed == ["y cannot prepare"]
            hold["xc"].set()
            hold["zc"].set()


async def test_waiters_answer_every_reply_parked_under_a_condition() -> None:
    waiters = Waiters()
    stops, exits = [Reply(), Reply()], [Reply()]
    for reply in stops:
        waiters.park("stop", reply)
    waiters.park("exit", exits[0])
    assert waiters.waiting("stop") and not waiters.waiting("kill")
    waiters.fail("stop", errors.SystemError("cannot stop"))
    waiters.resolve("exit", {"StatusCode": 0})
    for reply in stops:
        with pytest.raises(errors.SystemError, match="cannot stop"):
            await reply.wait()
    assert await exits[0].wait() == {"StatusCode": 0}
    assert not waiters.waiting("stop"), "answered replies leave the table"


class _Owner:
    """An actor reduced to what its mailbox asks of it: handled messages are recorded; one
    request may be made to block (as a handler the daemon's closing cancels)."""

    def __init__(self, *, holding: bool = False, finish_after: int | None = None) -> None:
        self.handled: list[Request] = []
        self.parked: list[Reply] = []
        self.closed_with: errors.DockerError | None = None
        self.busy = anyio.Event()
        self.block_on: Request | None = None
        self._holding = holding
        self._finish_after = finish_after

    async def handle(self, message: object) -> None:
        assert isinstance(message, Call)
        self.handled.append(message.request)
        if message.request is Request.WAIT and message.args == ("exit",):
            self.parked.append(message.reply)
            return
        if message.request is self.block_on:
            self.busy.set()
            await anyio.sleep_forever()
        message.reply.set(message.request.name)

    def holding(self) -> bool:
        return self._holding

    def finished(self) -> bool:
        return self._finish_after is not None and len(self.handled) >= self._finish_after

    def answer_when_gone(self, call: Call) -> object | None:
        return {"StatusCode": 0} if call.request is Request.WAIT else None

    def mailbox_closed(self, error: errors.DockerError) -> None:
        self.closed_with = error
        for reply in self.parked:
            reply.fail(error)


def _actor_tasks() -> int:
    return sum(1 for task in anyio.get_running_tasks() if task.name == SERVING_TASK)


async def test_a_mailbox_is_served_on_demand_and_an_idle_one_has_no_task() -> None:
    mailbox = Mailbox("c" * 64)
    owner = _Owner()
    early = mailbox.request(Request.STOP)  # queued before it is served: taken first
    async with anyio.create_task_group() as tg:
        mailbox.serve_on(Dispatcher(tg, keep_idle=0), owner)
        mailbox.request(Request.KILL, 9, "web")
        assert await early.wait() == "STOP"
        await anyio.wait_all_tasks_blocked()
        assert _actor_tasks() == 0, "an idle mailbox keeps no task"
        assert await mailbox.request(Request.PAUSE).wait() == "PAUSE"
        replies = [mailbox.request(Request.UNPAUSE), mailbox.request(Request.RENAME, "x")]
        assert _actor_tasks() == 1, "one task serves a burst"
        assert [await reply.wait() for reply in replies] == ["UNPAUSE", "RENAME"]
    assert owner.handled == [Request.STOP, Request.KILL, Request.PAUSE, Request.UNPAUSE,
                             Request.RENAME]  # fmt: skip
    assert owner.closed_with is None


async def test_the_dispatchers_tasks_serve_busy_mailboxes_and_few_wait_idle() -> None:
    """As many tasks as mailboxes busy at once; after, at most ``keep_idle`` wait, and the
    next message is taken by one of them (no task started)."""
    owners = [_Owner() for _ in range(5)]
    mailboxes = [Mailbox(f"{n:064x}") for n in range(5)]
    release = anyio.Event()
    served_by: list[int] = []  # the task that handled each message

    async def blocked(message: object) -> None:
        served_by.append(anyio.get_current_task().id)
        await release.wait()
        assert isinstance(message, Call)
        message.reply.set("done")

    async with anyio.create_task_group() as tg:
        dispatcher = Dispatcher(tg, keep_idle=2)
        for mailbox, owner in zip(mailboxes, owners, strict=True):
            owner.handle = blocked  # type: ignore[method-assign]
            mailbox.serve_on(dispatcher, owner)
        replies = [mailbox.request(Request.STOP) for mailbox in mailboxes]
        await anyio.wait_all_tasks_blocked()
        assert _actor_tasks() == 5, "one task per busy mailbox: none waits behind another"
        assert len(set(served_by)) == 5
        release.set()
        assert [await reply.wait() for reply in replies] == ["done"] * 5
        await anyio.wait_all_tasks_blocked()
        assert (_actor_tasks(), dispatcher.waiting) == (2, 2), "the others ended"
        waiting = {task.id for task in anyio.get_running_tasks() if task.name == SERVING_TASK}
        assert await mailboxes[0].request(Request.KILL).wait() == "done"
        assert served_by[-1] in waiting, "taken by a task that was waiting, none started"
        await anyio.wait_all_tasks_blocked()
        assert (_actor_tasks(), dispatcher.waiting) == (2, 2)
        tg.cancel_scope.cancel()
    assert dispatcher.waiting == 0, "cancelled: no task left to wake"


async def test_deferred_requests_wait_while_the_owner_holds() -> None:
    mailbox = Mailbox("c" * 64)
    owner = _Owner(holding=True)
    async with anyio.create_task_group() as tg:
        mailbox.serve_on(Dispatcher(tg, keep_idle=0), owner)
        deferred = Reply()
        mailbox.defer(Call(Request.STOP, (), deferred))
        await mailbox.request(Request.KILL, 9, "web").wait()
        assert not deferred.done, "held: the deferred request waits"
        owner._holding = False
        assert await mailbox.request(Request.PAUSE).wait() == "PAUSE"
        assert await deferred.wait() == "STOP"
    assert owner.handled == [Request.KILL, Request.PAUSE, Request.STOP]


async def test_a_finished_actors_mailbox_answers_what_is_still_queued() -> None:
    mailbox = Mailbox("c" * 64)
    owner = _Owner(holding=True, finish_after=1)
    first = mailbox.request(Request.STOP)
    deferred = Reply()
    mailbox.defer(Call(Request.STOP, (), deferred))
    wait = mailbox.request(Request.WAIT, "removed")
    kill = mailbox.request(Request.KILL, 9, "web")
    async with anyio.create_task_group() as tg:
        mailbox.serve_on(Dispatcher(tg, keep_idle=0), owner)
    assert owner.handled == [Request.STOP]
    assert await first.wait() == "STOP"
    assert await wait.wait() == {"StatusCode": 0}
    for reply in (deferred, kill):
        with pytest.raises(errors.NotFound, match="No such container"):
            await reply.wait()
    assert isinstance(owner.closed_with, errors.NotFound)
    with pytest.raises(errors.NotFound):
        mailbox.request(Request.START)


async def test_a_cancelled_actor_takes_nothing_more_and_answers_every_caller() -> None:
    mailbox = Mailbox("c" * 64)
    owner = _Owner()
    owner.block_on = Request.STOP
    parked = mailbox.request(Request.WAIT, "exit")
    first = mailbox.request(Request.STOP)
    queued = mailbox.request(Request.KILL, 9, "web")
    async with anyio.create_task_group() as tg:
        mailbox.serve_on(Dispatcher(tg, keep_idle=0), owner)
        await owner.busy.wait()
        tg.cancel_scope.cancel()
    assert owner.handled == [Request.WAIT, Request.STOP], "nothing taken after the cancel"
    # The request being handled, what was still queued and what was parked: no caller is
    # left waiting.
    for reply in (parked, first, queued):
        with pytest.raises(errors.Unavailable, match="shutting down"), anyio.fail_after(5):
            await reply.wait()
    with pytest.raises(errors.Unavailable, match="shutting down"):
        mailbox.request(
            Request.START
        )  # (asked after: the daemon is closing, not the container gone)


async def test_shutting_down_an_idle_mailbox_answers_what_its_owner_parked() -> None:
    mailbox = Mailbox("c" * 64)
    owner = _Owner()
    async with anyio.create_task_group() as tg:
        mailbox.serve_on(Dispatcher(tg, keep_idle=0), owner)
        parked = mailbox.request(Request.WAIT, "exit")
        await anyio.wait_all_tasks_blocked()
        assert _actor_tasks() == 0 and not parked.done
    mailbox.shut_down()  # (what the daemon does for each actor once its task group is done)
    with pytest.raises(errors.Unavailable, match="shutting down"):
        await parked.wait()
    with pytest.raises(errors.Unavailable, match="shutting down"):
        mailbox.request(Request.START)


async def test_only_the_armed_timers_expiry_counts() -> None:
    clock = FakeClock()
    mailbox = Mailbox("c" * 64)

    async def expiries() -> list[TimerFired]:
        await anyio.wait_all_tasks_blocked()  # every timer task has woken and posted (or not)
        found = []
        while (message := mailbox.take_nowait()) is not None:
            found.append(message)
        return [m for m in found if isinstance(m, TimerFired)]

    async with anyio.create_task_group() as tg:
        timers = Timers(mailbox, clock, tg)
        timers.arm("stop-timeout", 5)
        timers.arm("restart", 1)
        timers.disarm("restart")
        await clock.wait_sleepers(1)
        clock.advance(5)
        # A disarmed timer's task may still wake with the clock (its cancellation is only
        # delivered at its next checkpoint): its expiry may arrive, and is not taken.
        fired = [m for m in await expiries() if timers.fired(m)]
        assert [m.kind for m in fired] == ["stop-timeout"]
        assert not timers.fired(fired[0]), "an expiry counts once"
        timers.arm("restart", 1)
        timers.arm("restart", 10)  # re-armed: only the second one counts
        await clock.wait_sleepers(1)
        clock.advance(10)
        assert len([m for m in await expiries() if timers.fired(m)]) == 1
        tg.cancel_scope.cancel()
