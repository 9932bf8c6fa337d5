"""The record's changes at a start, an exit and a failed start: pure functions, no engine."""

from __future__ import annotations

import pytest

from asyncstart.config import Config, HostConfig
from asyncstart.lifecycle import Lifecycle, LifecycleEvent, State
from asyncstart.record import (
    EXIT_UNKNOWN,
    ZERO_TIME,
    ContainerRecord,
    exited,
    new_id,
    persisted_state,
    start_failed,
    started,
    wait_result,
)


def _record(**fields: object) -> ContainerRecord:
    return ContainerRecord(
        id="c" * 64,
        name="/web",
        created="2026-01-01T00:00:00Z",
        image="sha256:" + "a" * 64,
        config=Config(cmd=["true"]),
        host_config=HostConfig(),
        **fields,  # type: ignore[arg-type]
    )


def test_a_start_clears_the_last_runs_outcome_and_keeps_the_original() -> None:
    before = _record(exit_code=3, error="boom", oom_killed=True, restart_count=2)
    after = started(before, pid=42, started_at="2026-01-01T00:00:01Z", network={"IPAddress": "x"})
    assert (after.pid, after.exit_code, after.error, after.oom_killed) == (42, 0, "", False)
    assert after.has_been_started_before and after.network_settings == {"IPAddress": "x"}
    assert after.restart_count == 2, "the policy's count is not the start's to reset"
    assert (before.pid, before.exit_code, before.error) == (0, 3, "boom"), "a new record"


@pytest.mark.parametrize("restarting", [False, True])
def test_an_exit_keeps_only_the_files_that_named_the_container(restarting: bool) -> None:
    network = {"IPAddress": "10.0.0.2", "Networks": {"bridge": {}}, "HostsPath": "/h"}
    before = _record(pid=42, restart_count=1, network_settings=network)
    after = exited(before, exit_code=137, finished_at="t", oom_killed=True, restarting=restarting)
    assert (after.pid, after.exit_code, after.finished_at, after.oom_killed) == (0, 137, "t", True)
    assert after.network_settings == {"HostsPath": "/h"}
    assert after.restart_count == (2 if restarting else 1)


@pytest.mark.parametrize(
    ("last", "verdict", "after_restart", "code"),
    [
        (0, 0, False, EXIT_UNKNOWN),  # dockerd's default for a start that failed
        (0, 127, False, 127),  # the runtime's verdict wins
        (3, 0, False, 3),  # an earlier non-zero code is kept
        (0, 0, True, 0),  # a failed policy restart keeps the code of the run that ended
        (1, 126, True, 126),
    ],
)
def test_a_failed_start_records_dockerds_exit_code(
    last: int, verdict: int, after_restart: bool, code: int
) -> None:
    after = start_failed(
        _record(exit_code=last, pid=9), error="nope", exit_code=verdict, after_restart=after_restart
    )
    assert (after.exit_code, after.error, after.pid) == (code, "nope", 0)
    assert wait_result(after) == {"StatusCode": code, "Error": {"Message": "nope"}}


def test_wait_result_has_an_error_only_when_there_is_one() -> None:
    assert wait_result(_record(exit_code=2)) == {"StatusCode": 2}


@pytest.mark.parametrize(
    ("state", "ran_before", "persisted"),
    [
        (State.MOUNTING, False, "created"),
        (State.SPEC_READY, True, "exited"),
        (State.STOPPING, True, "running"),
        (State.REMOVING, False, "dead"),
        (State.PAUSED, True, "paused"),
        (State.RESTARTING, True, "restarting"),
    ],
)
def test_persisted_state_never_writes_the_sagas_inner_states(
    state: State, ran_before: bool, persisted: str
) -> None:
    assert persisted_state(Lifecycle("c" * 64, state, ran_before=ran_before)) == persisted


def test_a_new_record_and_id() -> None:
    record = _record()
    assert record.started_at == record.finished_at == ZERO_TIME
    ids = {new_id() for _ in range(200)}
    assert len(ids) == 200 and all(len(i) == 64 and not i[:12].isdigit() for i in ids)
    lifecycle = Lifecycle(record.id)
    lifecycle.handle(LifecycleEvent.START)
    assert persisted_state(lifecycle) == "created"
