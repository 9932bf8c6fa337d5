"""The lifecycle table, sans-io: every allowed step, every refused one, the derived status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from asyncstart import errors
from asyncstart.lifecycle import (
    TRANSITIONS,
    Branch,
    InvalidTransition,
    Lifecycle,
    LifecycleEvent,
    Request,
    State,
    docker_status,
    refusal,
)

ROOT = Path(__file__).resolve().parent.parent

# The transitions of the design, written out independently of the table.
EXPECTED = {
    (State.CREATED, LifecycleEvent.START): State.MOUNTING,
    (State.EXITED, LifecycleEvent.START): State.MOUNTING,
    (State.MOUNTING, LifecycleEvent.MOUNTED): State.NETWORKING,
    (State.NETWORKING, LifecycleEvent.NETWORKED): State.SPEC_READY,
    (State.SPEC_READY, LifecycleEvent.STARTED): State.RUNNING,
    (State.RUNNING, LifecycleEvent.STOP): State.STOPPING,
    (State.RUNNING, LifecycleEvent.PAUSE): State.PAUSED,
    (State.PAUSED, LifecycleEvent.UNPAUSE): State.RUNNING,
    (State.PAUSED, LifecycleEvent.STOP): State.STOPPING,
    (State.RESTARTING, LifecycleEvent.RESTART_DUE): State.MOUNTING,
    (State.RESTARTING, LifecycleEvent.CANCEL_RESTART): State.EXITED,
    (State.CREATED, LifecycleEvent.REMOVE): State.REMOVING,
    (State.EXITED, LifecycleEvent.REMOVE): State.REMOVING,
    (State.DEAD, LifecycleEvent.REMOVE): State.REMOVING,
    (State.REMOVING, LifecycleEvent.REMOVED): State.REMOVED,
    (State.REMOVING, LifecycleEvent.REMOVE_FAILED): State.DEAD,
}


@pytest.mark.parametrize(("state", "event"), sorted(EXPECTED, key=str))
def test_plain_transitions(state: State, event: LifecycleEvent) -> None:
    lifecycle = Lifecycle("c" * 64, state)
    assert lifecycle.handle(event) is EXPECTED[state, event]
    assert lifecycle.state is EXPECTED[state, event]


@pytest.mark.parametrize("state", [State.MOUNTING, State.NETWORKING, State.SPEC_READY])
@pytest.mark.parametrize(("ran_before", "target"), [(False, State.CREATED), (True, State.EXITED)])
def test_failed_start_lands_where_the_container_was(
    state: State, ran_before: bool, target: State
) -> None:
    lifecycle = Lifecycle("c" * 64, state, ran_before=ran_before)
    assert lifecycle.handle(LifecycleEvent.FAILED) is target


@pytest.mark.parametrize("state", [State.RUNNING, State.PAUSED, State.STOPPING])
@pytest.mark.parametrize(("restart", "target"), [(False, State.EXITED), (True, State.RESTARTING)])
def test_exit_restarts_only_when_the_policy_says(
    state: State, restart: bool, target: State
) -> None:
    lifecycle = Lifecycle("c" * 64, state, ran_before=True)
    assert lifecycle.handle(LifecycleEvent.EXITED, restart=restart) is target


def test_every_other_pair_is_refused_with_a_precise_error() -> None:
    allowed = {(s, e) for s, row in TRANSITIONS.items() for e in row}
    refused = [(s, e) for s in State for e in LifecycleEvent if (s, e) not in allowed]
    assert len(refused) > 100
    for state, event in refused:
        lifecycle = Lifecycle("abcdef0123456789" * 4, state)
        with pytest.raises(InvalidTransition) as info:
            lifecycle.handle(event)
        assert info.value.state is state and info.value.event is event
        assert f"{event.value!r} in state {state.value!r}" in str(info.value)
        assert "abcdef012345" in str(info.value)
        assert lifecycle.state is state, "a refused event must not move the state"


def test_table_covers_every_state_and_only_known_targets() -> None:
    assert set(TRANSITIONS) == set(State)
    for row in TRANSITIONS.values():
        for target in row.values():
            targets = target.targets() if isinstance(target, Branch) else (target,)
            assert all(isinstance(t, State) for t in targets)


def test_full_life_and_ran_before() -> None:
    lifecycle = Lifecycle("c" * 64)
    for event in (LifecycleEvent.START, LifecycleEvent.MOUNTED, LifecycleEvent.NETWORKED):
        lifecycle.handle(event)
    assert lifecycle.status == "created" and not lifecycle.ran_before
    lifecycle.handle(LifecycleEvent.STARTED)
    assert lifecycle.ran_before and lifecycle.status == "running"
    lifecycle.handle(LifecycleEvent.EXITED, restart=True)
    assert lifecycle.status == "restarting"
    lifecycle.handle(LifecycleEvent.RESTART_DUE)
    assert lifecycle.status == "restarting", "a policy restart shows as restarting until it runs"
    lifecycle.handle(LifecycleEvent.FAILED)
    assert lifecycle.state is State.EXITED and lifecycle.status == "exited"
    lifecycle.handle(LifecycleEvent.START)
    assert lifecycle.status == "exited", "a user start of an exited container shows exited"


@pytest.mark.parametrize(
    ("state", "ran_before", "status"),
    [
        (State.CREATED, False, "created"),
        (State.MOUNTING, False, "created"),
        (State.SPEC_READY, True, "exited"),
        (State.STOPPING, True, "running"),
        (State.PAUSED, True, "paused"),
        (State.DEAD, True, "dead"),
        (State.REMOVING, False, "removing"),
    ],
)
def test_docker_status(state: State, ran_before: bool, status: str) -> None:
    assert docker_status(state, ran_before=ran_before) == status


def test_rendered_diagram_is_up_to_date() -> None:
    rendered = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "render_lifecycle.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr


# dockerd's answers to a refused request, written out independently of REFUSALS.
_REFUSED = {
    (Request.START, State.PAUSED): (
        errors.Conflict,
        "cannot start a paused container, try unpause instead",
    ),
    (Request.START, State.RUNNING): (errors.NotModified, "container is already running"),
    (Request.START, State.RESTARTING): (errors.NotModified, "container is already running"),
    (Request.START, State.DEAD): (
        errors.Conflict,
        "container is marked for removal and cannot be started",
    ),
    (Request.STOP, State.EXITED): (errors.NotModified, "container is already stopped"),
    (Request.STOP, State.CREATED): (errors.NotModified, "container is already stopped"),
    (Request.KILL, State.CREATED): (
        errors.Conflict,
        "cannot kill container: web: container c0ffee is not running",
    ),
    (Request.PAUSE, State.PAUSED): (errors.Conflict, "container c0ffee is already paused"),
    (Request.PAUSE, State.STOPPING): (errors.Conflict, "container c0ffee is not running"),
    (Request.PAUSE, State.RESTARTING): (
        errors.Conflict,
        "Container c0ffee is restarting, wait until the container is running",
    ),
    (Request.UNPAUSE, State.RUNNING): (errors.SystemError, "Container c0ffee is not paused"),
    (Request.REMOVE, State.RUNNING): (
        errors.Conflict,
        'cannot remove container "/web": container is running: stop the container before '
        "removing or force remove",
    ),
    (Request.REMOVE, State.PAUSED): (
        errors.Conflict,
        'cannot remove container "/web": container is paused and must be unpaused first',
    ),
    (Request.FORCE_REMOVE, State.REMOVING): (
        errors.Conflict,
        "removal of container web is already in progress",
    ),
    (Request.ATTACH, State.PAUSED): (
        errors.Conflict,
        "container web is paused, unpause the container before attach",
    ),
    (Request.RESIZE, State.EXITED): (errors.Conflict, "Container c0ffee is not running"),
    (Request.EXPORT, State.REMOVING): (
        errors.Conflict,
        "You cannot export container c0ffee which is being removed",
    ),
    (Request.EXPORT, State.DEAD): (
        errors.Conflict,
        "You cannot export container c0ffee which is Dead",
    ),
}
_LET_THROUGH = [
    (Request.START, State.CREATED),
    (Request.START, State.EXITED),
    (Request.STOP, State.RUNNING),
    (Request.STOP, State.PAUSED),
    (Request.KILL, State.STOPPING),
    (Request.PAUSE, State.RUNNING),
    (Request.UNPAUSE, State.PAUSED),
    (Request.REMOVE, State.EXITED),
    (Request.FORCE_REMOVE, State.RUNNING),
    (Request.ATTACH, State.CREATED),
    (Request.RESIZE, State.STOPPING),
    (Request.WAIT, State.RUNNING),
    (Request.EXPORT, State.RUNNING),
    (Request.EXPORT, State.EXITED),
]


@pytest.mark.parametrize(("request_", "state"), list(_REFUSED))
def test_a_refused_request_gets_dockerds_error(request_: Request, state: State) -> None:
    lifecycle = Lifecycle("c0ffee", state, ran_before=True)
    found = refusal(request_, lifecycle)
    assert found is not None
    error = found.exception(id="c0ffee", name="/web", reference="web", status=lifecycle.status)
    kind, message = _REFUSED[request_, state]
    assert type(error) is kind and error.message == message


@pytest.mark.parametrize(("request_", "state"), _LET_THROUGH)
def test_an_allowed_request_is_let_through(request_: Request, state: State) -> None:
    assert refusal(request_, Lifecycle("c0ffee", state, ran_before=True)) is None


def test_a_policy_restart_in_flight_refuses_attach_as_restarting() -> None:
    lifecycle = Lifecycle("c0ffee", State.RESTARTING, ran_before=True)
    lifecycle.handle(LifecycleEvent.RESTART_DUE)  # the saga runs: mounting, via restart
    found = refusal(Request.ATTACH, lifecycle)
    assert found is not None and "is restarting" in found.message
    # The actor's own requests see the exact state: a start joins, it is not refused.
    assert refusal(Request.START, lifecycle) is None


def test_enter_phase_closes_the_phases_before_it() -> None:
    lifecycle = Lifecycle("c" * 64, State.MOUNTING)
    lifecycle.enter_phase(State.MOUNTING)
    assert lifecycle.state is State.MOUNTING
    lifecycle.enter_phase(State.SPEC_READY)
    assert lifecycle.state is State.SPEC_READY
    with pytest.raises(InvalidTransition):
        Lifecycle("c" * 64, State.RUNNING).enter_phase(State.SPEC_READY)


def test_a_copy_holds_every_field_and_moves_alone() -> None:
    lifecycle = Lifecycle("c" * 64, State.EXITED, ran_before=True, via_restart=True)
    copy = lifecycle.copy()
    assert copy == lifecycle and copy is not lifecycle
    copy.handle(LifecycleEvent.START)
    assert lifecycle.state is State.EXITED and copy.state is State.MOUNTING
