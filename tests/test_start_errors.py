"""dockerd's ``setExitCodeFromError``: what a runtime's refusal to start a process becomes.

First the mapping alone (``translate_start_error``), then through a daemon on the fake runtime:
the error the caller gets, and the exit code and error the container keeps.
"""

from __future__ import annotations

import pytest

from asyncstart import errors
from asyncstart.runtime import RuntimeFailure, translate_start_error

from .conftest import Engine
from .helpers import create

NOT_FOUND = 'exec: "nosuch": executable file not found in $PATH'
NO_SUCH_FILE = "exec /app/run: no such file or directory"
DENIED = "exec /app/run: permission denied"
IS_DIR = "exec /app: is a directory"
NOT_DIR = 'error mounting "/h/f" to rootfs at "/etc/hosts": not a directory'
MOUNT_HINT = (
    ": Are you trying to mount a directory onto a file (or vice-versa)? "
    "Check if the specified host path exists and is the expected type"
)

# message from the runtime -> exit code, error class, message the caller gets
MAPPING = [
    (DENIED, 126, errors.InvalidParameter, DENIED),
    ("OCI runtime create failed: PERMISSION DENIED", 126, errors.InvalidParameter, None),
    (IS_DIR, 126, errors.InvalidParameter, IS_DIR + ": permission denied"),
    (NOT_DIR, 127, errors.InvalidParameter, NOT_DIR + MOUNT_HINT),
    (NOT_FOUND, 127, errors.InvalidParameter, NOT_FOUND),
    (NO_SUCH_FILE, 127, errors.InvalidParameter, NO_SUCH_FILE),
    ("The system cannot find the file specified.", 127, errors.InvalidParameter, None),
    ("failed to run runc create/exec call for container x", 127, errors.InvalidParameter, None),
    ("runc: cgroup: device or resource busy", 128, errors.SystemError, None),
    ("", 128, errors.SystemError, None),
]


@pytest.mark.parametrize(
    ("message", "code", "error", "shown"), MAPPING, ids=[str(m[1]) for m in MAPPING]
)
def test_translate_start_error(
    message: str, code: int, error: type[errors.DockerError], shown: str | None
) -> None:
    got_code, got_error = translate_start_error(message)
    assert got_code == code
    assert type(got_error) is error
    assert got_error.status == (400 if code in (126, 127) else 500)
    assert str(got_error) == (message if shown is None else shown)


def test_the_first_matching_rule_wins() -> None:
    # Permission problems are looked for first, then directories, then missing files.
    code, error = translate_start_error("open /x: no such file or directory: permission denied")
    assert code == 126 and str(error).endswith("permission denied")
    code, error = translate_start_error("stat /a: not a directory; no such file or directory")
    assert code == 127 and str(error).endswith(MOUNT_HINT)


def test_each_call_gets_its_own_error() -> None:
    _, first = translate_start_error(DENIED)
    _, second = translate_start_error(DENIED)
    assert first is not second


# -- through the daemon ----------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("phase", ["create", "start"])
@pytest.mark.parametrize(
    ("message", "code", "error", "shown"),
    [MAPPING[0], MAPPING[2], MAPPING[3], MAPPING[4], MAPPING[8]],
    ids=["126", "126-dir", "127-mount", "127", "128"],
)
async def test_a_start_the_runtime_refuses(
    engine: Engine,
    phase: str,
    message: str,
    code: int,
    error: type[errors.DockerError],
    shown: str | None,
) -> None:
    daemon = engine.daemon
    cid = await create(daemon, "web")
    engine.runtime.faults.inject(phase, message, container_id=cid, error=RuntimeFailure)
    with pytest.raises(error) as caught:
        await daemon.container_start("web")
    expected = message if shown is None else shown
    assert str(caught.value) == expected
    state = (await daemon.container_inspect("web"))["State"]
    assert (state["Status"], state["ExitCode"], state["Error"]) == ("created", code, expected)
    assert await daemon.container_wait("web") == {
        "StatusCode": code,
        "Error": {"Message": expected},
    }
    # Nothing the start took is kept, and the next start runs.
    assert cid not in engine.runtime.live() and not engine.mounter.mounted(cid)
    assert engine.network.sandboxes == {}
    await daemon.container_start("web")
    state = (await daemon.container_inspect("web"))["State"]
    assert (state["Status"], state["ExitCode"], state["Error"]) == ("running", 0, "")


@pytest.mark.anyio
async def test_a_refused_start_after_a_run_shows_exited_with_the_runtimes_code(
    engine: Engine,
) -> None:
    daemon = engine.daemon
    cid = await create(daemon, "job", "sh", "-c", "exit 3")
    await daemon.container_start("job")
    assert (await daemon.container_wait("job"))["StatusCode"] == 3
    engine.runtime.faults.inject("create", NOT_FOUND, container_id=cid, error=RuntimeFailure)
    with pytest.raises(errors.InvalidParameter):
        await daemon.container_start("job")
    state = (await daemon.container_inspect("job"))["State"]
    # A runtime verdict replaces the last run's code (dockerd's setExitCodeFromError).
    assert (state["Status"], state["ExitCode"], state["Error"]) == ("exited", 127, NOT_FOUND)
