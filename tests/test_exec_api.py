"""``docker exec`` over the Engine API, on the fake runtime: ``POST /containers/{id}/exec``,
``POST /exec/{id}/start`` (hijacked, or detached), ``GET /exec/{id}/json`` and
``POST /exec/{id}/resize``, with dockerd's statuses and messages, the OCI process the runtime
is handed, the events and ``ExecIDs``. docker-py drives the same routes at the end (in a worker
thread, against the server in the test's own loop).

The expected behaviour is dockerd 28.3's (API 1.51): where asyncstart answers otherwise, the
test says what dockerd does and is a strict xfail naming the place."""

from __future__ import annotations

import fcntl
import json
import re
import struct
import termios
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncstart import FakeRuntime, errors
from asyncstart.config import CAPABILITIES
from asyncstart.runtime.base import Console
from asyncstart.spec import DEFAULT_PATH

from .conftest import OpenEngine
from .test_api import Api, Raw, http, open_api, raw, read_to_end, sleeper

pytestmark = pytest.mark.anyio

RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"


@pytest.fixture
async def api(open_engine: OpenEngine, sock: Path) -> AsyncIterator[Api]:
    async with open_api(open_engine, sock) as opened:
        yield opened


class ConsoleRuntime(FakeRuntime):
    """The fake runtime, keeping each terminal's master (to read its size back)."""

    def __init__(self) -> None:
        super().__init__()
        self.masters: list[int] = []

    async def exec(
        self,
        container_id: str,
        process: dict[str, Any],
        stdio: tuple[int, int, int],
        console: Console | None = None,
    ) -> int:
        def keep(master: int, on_resize: Any) -> None:
            self.masters.append(master)
            assert console is not None
            console(master, on_resize)

        return await super().exec(container_id, process, stdio, keep if console else None)


@pytest.fixture
async def tty_api(open_engine: OpenEngine, sock: Path) -> AsyncIterator[Api]:
    async with open_api(open_engine, sock, runtime=ConsoleRuntime()) as opened:
        yield opened


# -- helpers --------------------------------------------------------------------------------


async def running(api: Api, name: str = "web", **config: Any) -> str:
    """A started sleeper's ID."""
    cid = await sleeper(api, name, **config)
    await api.client.container_start(cid)
    return cid


async def post(api: Api, path: str, body: Any = None) -> Raw:
    data = b"" if body is None else json.dumps(body).encode()
    return await raw(api.sock, http("POST", path, data, "Content-Type: application/json"))


def refused(reply: Raw, status: int, message: str) -> None:
    assert (reply.status, reply.json()["message"]) == (status, message)


async def run_exec(
    api: Api, container: str, cmd: list[str], **config: Any
) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
    """Create and start an attached exec; its output (to the end) and its inspect after."""
    body = {"Cmd": cmd, "AttachStdout": True, "AttachStderr": True, **config}
    exec_id = await api.client.exec_create(container, body)
    with anyio.fail_after(10):
        async with api.client.exec_start(exec_id) as session:
            output = [item async for item in session]
    return output, await api.client.exec_inspect(exec_id)


def last_process(api: Api) -> dict[str, Any]:
    """The OCI process of the latest exec the runtime was handed."""
    return api.engine.runtime.execs[-1][1]


async def ended(api: Api, exec_id: str) -> dict[str, Any]:
    """The exec's inspect once it no longer runs (bounded)."""
    with anyio.fail_after(10):
        while (inspected := await api.client.exec_inspect(exec_id))["Running"]:
            await anyio.sleep(0.01)
    return inspected


def start_request(exec_id: str, body: dict[str, Any], upgrade: bool = True) -> bytes:
    """``POST /exec/{id}/start`` as the CLI sends it (no ``Connection: close``)."""
    data = json.dumps(body).encode()
    lines = [
        f"POST /v1.51/exec/{exec_id}/start HTTP/1.1",
        "Host: docker",
        "Content-Type: application/json",
        f"Content-Length: {len(data)}",
    ]
    if upgrade:
        lines += ["Connection: Upgrade", "Upgrade: tcp"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


async def receive_head(stream: anyio.abc.ByteStream) -> tuple[str, dict[str, str], bytes]:
    """A hijacked reply's status line, headers (lower-case names) and what came after."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive()
    head, _, rest = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines)}
    return status, headers, rest


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


# -- through the client ---------------------------------------------------------------------


async def test_an_exec_runs_and_inspect_shows_its_config_and_end(api: Api) -> None:
    cid = await running(api)
    exec_id = await api.client.exec_create(
        "web", {"Cmd": ["echo", "hi"], "AttachStdout": True, "AttachStderr": True}
    )
    assert re.fullmatch("[0-9a-f]{64}", exec_id)
    before = await api.client.exec_inspect(exec_id)
    assert (before["ID"], before["Running"], before["ExitCode"]) == (exec_id, False, None)
    assert before["ProcessConfig"] == {
        "tty": False,
        "entrypoint": "echo",
        "arguments": ["hi"],
        "privileged": False,
    }
    assert (before["OpenStdin"], before["OpenStdout"], before["OpenStderr"]) == (
        False,
        True,
        True,
    )
    assert before["ContainerID"] == cid
    assert api.engine.runtime.execs == []  # nothing runs before the start
    with anyio.fail_after(10):
        async with api.client.exec_start(exec_id) as session:
            output = [item async for item in session]
    assert output == [("stdout", b"hi\n")]
    after = await api.client.exec_inspect(exec_id)
    assert (after["Running"], after["ExitCode"], after["ContainerID"]) == (False, 0, cid)
    assert isinstance(after["Pid"], int)
    assert [(container, process["args"]) for container, process in api.engine.runtime.execs] == [
        (cid, ["echo", "hi"])
    ]


@pytest.mark.parametrize(
    ("cmd", "output", "code"),
    [
        (["sh", "-c", "exit 3"], [], 3),
        (["false"], [], 1),
        (["true"], [], 0),
        (["nope", "x"], [("stderr", b"exec: nope: not found\n")], 127),
    ],
)
async def test_exit_codes_and_stderr(
    api: Api, cmd: list[str], output: list[tuple[str, bytes]], code: int
) -> None:
    await running(api)
    got, inspected = await run_exec(api, "web", cmd)
    assert got == output
    assert (inspected["Running"], inspected["ExitCode"]) == (False, code)


async def test_stdin_reaches_the_exec_and_its_eof_ends_it(api: Api) -> None:
    await running(api)
    exec_id = await api.client.exec_create(
        "web", {"Cmd": ["cat"], "AttachStdin": True, "AttachStdout": True}
    )
    with anyio.fail_after(10):
        async with api.client.exec_start(exec_id) as session:
            await session.send(b"hello\n")
            output = session.__aiter__()
            assert await output.__anext__() == ("stdout", b"hello\n")
            assert (await api.client.exec_inspect(exec_id))["Running"] is True
            await session.send_eof()  # the half-close: cat's EOF, the output goes on to its end
            assert [item async for item in output] == []
    inspected = await api.client.exec_inspect(exec_id)
    assert (inspected["Running"], inspected["ExitCode"], inspected["OpenStdin"]) == (
        False,
        0,
        True,
    )


class FailingRuntime(FakeRuntime):
    """The fake runtime, whose exec fails with an error of the host, not the runtime's."""

    async def exec(
        self,
        container_id: str,
        process: dict[str, Any],
        stdio: tuple[int, int, int],
        console: Console | None = None,
    ) -> int:
        raise OSError(5, "Input/output error")


async def test_a_failing_exec_ends_the_exec_not_the_daemon(
    open_engine: OpenEngine, sock: Path
) -> None:
    async with open_api(open_engine, sock, runtime=FailingRuntime()) as api:
        await running(api)
        _, inspected = await run_exec(api, "web", ["true"])
        assert (inspected["Running"], inspected["ExitCode"]) == (False, 126)
        await anyio.sleep(0.1)
        assert await api.client.ping() == "OK"
        assert (await api.client.container_inspect("web"))["State"]["Running"] is True


# -- the OCI process ------------------------------------------------------------------------


async def test_the_process_has_the_containers_env_and_the_execs_own(api: Api) -> None:
    cid = await running(api, Env=["A=1", "B=2"])
    got, _ = await run_exec(
        api,
        "web",
        ["env"],
        Env=["B=3", "C=4"],
        User="1000:1000",
        WorkingDir="/tmp",
    )
    container, process = api.engine.runtime.execs[-1]
    assert container == cid
    assert process["args"] == ["env"]
    # The container's environment with the exec's added, a same-named variable replaced where
    # it was (dockerd's ReplaceOrAppendEnvValues).
    env = [item for item in process["env"] if not item.startswith("HOSTNAME=")]
    assert env == [DEFAULT_PATH, "A=1", "B=3", "C=4"]
    assert got == [("stdout", "".join(f"{item}\n" for item in process["env"]).encode())]
    assert process["user"]["uid"] == 1000 and process["user"]["gid"] == 1000
    assert process["cwd"] == "/tmp"
    assert process["terminal"] is False and "consoleSize" not in process
    assert not any(item.startswith("TERM=") for item in process["env"])
    # What the played programs print of it.
    assert (await run_exec(api, "web", ["id", "-u"], User="1000"))[0] == [("stdout", b"1000\n")]
    assert last_process(api)["user"]["uid"] == 1000
    assert (await run_exec(api, "web", ["pwd"], WorkingDir="/srv"))[0] == [("stdout", b"/srv\n")]


async def test_an_exec_shows_its_user_in_inspect(api: Api) -> None:
    await running(api)
    exec_id = await api.client.exec_create("web", {"Cmd": ["true"], "User": "1000:1000"})
    assert (await api.client.exec_inspect(exec_id))["ProcessConfig"]["user"] == "1000:1000"


async def test_without_user_or_working_dir_the_exec_has_the_containers(api: Api) -> None:
    await running(api, User="7:8", WorkingDir="/srv")
    container_process = api.engine.runtime.processes[
        (await api.client.container_inspect("web"))["Id"]
    ].spec["process"]
    assert isinstance(container_process, dict)
    await run_exec(api, "web", ["true"])
    process = last_process(api)
    assert process["cwd"] == container_process["cwd"] == "/srv"
    assert process["user"] == container_process["user"]
    assert (process["user"]["uid"], process["user"]["gid"]) == (7, 8)
    assert process["capabilities"] == container_process["capabilities"]


async def test_a_privileged_exec_gets_every_capability(api: Api) -> None:
    await running(api)
    await run_exec(api, "web", ["true"])
    plain = last_process(api)["capabilities"]
    assert set(plain["bounding"]) < set(CAPABILITIES)  # the default set, not every one
    exec_id = await api.client.exec_create("web", {"Cmd": ["true"], "Privileged": True})
    assert (await api.client.exec_inspect(exec_id))["ProcessConfig"]["privileged"] is True
    await api.client.exec_start_detached(exec_id)
    assert (await ended(api, exec_id))["ExitCode"] == 0
    capabilities = last_process(api)["capabilities"]
    every = list(CAPABILITIES)
    assert capabilities == {"bounding": every, "effective": every, "permitted": every}


async def test_a_tty_exec_gets_a_terminal_and_term(api: Api) -> None:
    await running(api)
    got, inspected = await run_exec(api, "web", ["echo", "hi"], Tty=True)
    # One raw stream (no frames), through the terminal: its line discipline's CR LF.
    assert got == [("stdout", b"hi\r\n")]
    assert inspected["ProcessConfig"]["tty"] is True and inspected["ExitCode"] == 0
    process = last_process(api)
    assert process["terminal"] is True
    assert "TERM=xterm" in process["env"]
    await run_exec(api, "web", ["true"], Tty=True, Env=["TERM=vt100"])
    terms = [item for item in last_process(api)["env"] if item.startswith("TERM=")]
    assert terms == ["TERM=vt100"]


@pytest.mark.xfail(
    strict=True,
    reason="dockerd builds an exec's env with CreateDaemonEnvironment(exec Tty): a non-tty exec "
    "in a tty container has no TERM; asyncstart copies the container process's env "
    "(asyncstart/execs.py, exec_process)",
)
async def test_a_non_tty_exec_in_a_tty_container_has_no_term(api: Api) -> None:
    await running(api, Tty=True)
    await run_exec(api, "web", ["true"])
    assert not any(item.startswith("TERM=") for item in last_process(api)["env"])


@pytest.mark.xfail(
    strict=True,
    reason="dockerd's exec env starts with PATH and HOSTNAME=<Config.Hostname> "
    "(CreateDaemonEnvironment); asyncstart's has no HOSTNAME (asyncstart/execs.py, exec_process; "
    "the container's own env lacks it too: asyncstart/spec.py, the env in the spec builder)",
)
async def test_the_exec_env_has_hostname(api: Api) -> None:
    await running(api)
    hostname = (await api.client.container_inspect("web"))["Config"]["Hostname"]
    await run_exec(api, "web", ["env"])
    assert f"HOSTNAME={hostname}" in last_process(api)["env"]


# -- errors ---------------------------------------------------------------------------------


async def test_an_exec_needs_a_running_container(api: Api) -> None:
    cid = await sleeper(api)
    with pytest.raises(errors.Conflict, match=f"^container {cid} is not running$"):
        await api.client.exec_create("web", {"Cmd": ["true"]})
    refused(
        await post(api, "/containers/web/exec", {"Cmd": ["true"]}),
        409,
        f"container {cid} is not running",
    )
    refused(
        await post(api, "/containers/nope/exec", {"Cmd": ["true"]}), 404, "No such container: nope"
    )
    await api.client.container_start("web")
    await api.client.container_pause("web")
    paused = await post(api, "/containers/web/exec", {"Cmd": ["true"]})
    assert paused.status == 409
    assert re.fullmatch(
        r"(?i)container \S+ is paused, unpause the container before exec", paused.json()["message"]
    )
    await api.client.container_unpause("web")
    # Created while it ran, started once it no longer does.
    exec_id = await api.client.exec_create("web", {"Cmd": ["true"]})
    await api.client.container_kill("web")
    refused(
        await post(api, f"/exec/{exec_id}/start", {"Detach": True}),
        409,
        f"container {cid} is not running",
    )
    assert api.engine.runtime.execs == []
    inspected = await api.client.exec_inspect(exec_id)
    assert (inspected["Running"], inspected["ExitCode"]) == (False, None)


async def test_the_paused_refusal_is_dockerds_text(api: Api) -> None:
    await running(api)
    await api.client.container_pause("web")
    refused(
        await post(api, "/containers/web/exec", {"Cmd": ["true"]}),
        409,
        "Container web is paused, unpause the container before exec",
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "No exec command specified"),
        ({"Cmd": []}, "No exec command specified"),
        ({"Cmd": None}, "No exec command specified"),
        # asyncstart's own, before anything runs (dockerd passes it on; the runtime fails the
        # start: "cwd must be an absolute path").
        (
            {"Cmd": ["pwd"], "WorkingDir": "x"},
            "the working directory 'x' is invalid, it needs to be an absolute path",
        ),
    ],
)
async def test_exec_create_refuses_a_bad_config(
    api: Api, body: dict[str, Any], message: str
) -> None:
    await running(api)
    refused(await post(api, "/containers/web/exec", body), 400, message)
    assert (await api.client.container_inspect("web"))["ExecIDs"] is None


async def test_detach_keys_are_checked_at_create(api: Api) -> None:
    await running(api)
    bad = await post(api, "/containers/web/exec", {"Cmd": ["true"], "DetachKeys": "ctrl-1"})
    assert bad.status in (400, 500) and "ctrl-1" in bad.json()["message"]
    assert (await api.client.container_inspect("web"))["ExecIDs"] is None
    good = await post(api, "/containers/web/exec", {"Cmd": ["true"], "DetachKeys": "ctrl-a,x"})
    assert good.status == 201


async def test_bad_detach_keys_are_dockerds_error(api: Api) -> None:
    await running(api)
    refused(
        await post(api, "/containers/web/exec", {"Cmd": ["true"], "DetachKeys": "ctrl-1"}),
        500,
        "Invalid escape keys (ctrl-1) provided",
    )


@pytest.mark.xfail(
    strict=True,
    reason="dockerd looks the exec's user up at create (getUser: 400 'unable to find user ...'); "
    "asyncstart only at start (asyncstart/daemon.py, Daemon.exec_create vs exec_start)",
)
async def test_an_unknown_user_is_refused_at_create(api: Api) -> None:
    await running(api)
    with pytest.raises(errors.InvalidParameter, match="unable to find user alice"):
        await api.client.exec_create("web", {"Cmd": ["true"], "User": "alice"})


async def test_an_unknown_exec_is_404_everywhere(api: Api) -> None:
    missing = "No such exec instance: nope"
    refused(await post(api, "/exec/nope/start", {"Detach": False}), 404, missing)
    refused(await post(api, "/exec/nope/start", {"Detach": True}), 404, missing)
    refused(await raw(api.sock, http("GET", "/exec/nope/json")), 404, missing)
    refused(await post(api, "/exec/nope/resize?h=10&w=20"), 404, missing)
    with pytest.raises(errors.NotFound, match=f"^{missing}$"):
        await api.client.exec_inspect("nope")
    with pytest.raises(errors.NotFound, match=f"^{missing}$"):
        async with api.client.exec_start("nope"):
            pass


async def test_an_exec_starts_once(api: Api) -> None:
    await running(api)
    exec_id = await api.client.exec_create(
        "web", {"Cmd": ["cat"], "AttachStdin": True, "AttachStdout": True}
    )
    with anyio.fail_after(10):
        async with api.client.exec_start(exec_id) as session:
            again = await post(api, f"/exec/{exec_id}/start", {"Detach": True})
            assert again.status == 409 and exec_id in again.json()["message"]
            with pytest.raises(errors.Conflict):
                async with api.client.exec_start(exec_id):
                    pass
            await session.send_eof()
            assert [item async for item in session] == []
    ran = await post(api, f"/exec/{exec_id}/start", {"Detach": True})
    assert ran.status == 409 and exec_id in ran.json()["message"]
    assert (await api.client.exec_inspect(exec_id))["ExitCode"] == 0
    assert len(api.engine.runtime.execs) == 1


async def test_a_second_start_is_refused_with_dockerds_text(api: Api) -> None:
    await running(api)
    exec_id = await api.client.exec_create(
        "web", {"Cmd": ["cat"], "AttachStdin": True, "AttachStdout": True}
    )
    with anyio.fail_after(10):
        async with api.client.exec_start(exec_id) as session:
            while_running = await post(api, f"/exec/{exec_id}/start", {"Detach": True})
            await session.send_eof()
            assert [item async for item in session] == []
    after = await post(api, f"/exec/{exec_id}/start", {"Detach": True})
    refused(while_running, 409, f"exec command {exec_id} is already running")
    refused(after, 409, f"exec command {exec_id} has already run")


@pytest.mark.parametrize(
    "size",
    [
        "40x120",
        [40],
        [40, 120, 1],
        ["40", "120"],
        {"Height": 40},
        pytest.param(
            [-1, 80],
        ),
        pytest.param(
            [True, 80],
        ),
    ],
)
async def test_an_invalid_console_size_is_400(api: Api, size: Any) -> None:
    await running(api)
    exec_id = await api.client.exec_create("web", {"Cmd": ["true"], "Tty": True})
    reply = await post(api, f"/exec/{exec_id}/start", {"Detach": True, "ConsoleSize": size})
    assert reply.status == 400
    # Refused before anything ran: it can still be started.
    assert api.engine.runtime.execs == []
    await api.client.exec_start_detached(exec_id)
    assert (await ended(api, exec_id))["ExitCode"] == 0


@pytest.mark.xfail(
    strict=True,
    reason="dockerd's ExecInspect shows the exec process's pid (Process.Pid()); asyncstart's "
    "ExecInstance.pid is never set, the runtime's exec returns only the exit code "
    "(asyncstart/execs.py, ExecInstance.pid; asyncstart/daemon.py, Daemon._run_exec)",
)
async def test_a_running_exec_shows_its_pid(api: Api) -> None:
    await running(api)
    exec_id = await api.client.exec_create(
        "web", {"Cmd": ["cat"], "AttachStdin": True, "AttachStdout": True}
    )
    with anyio.fail_after(10):
        async with api.client.exec_start(exec_id) as session:
            await session.send(b"x")
            assert await session.__aiter__().__anext__() == ("stdout", b"x")
            pid = (await api.client.exec_inspect(exec_id))["Pid"]
            await session.send_eof()
    assert pid > 0


async def test_an_exec_of_a_removed_container_is_gone(api: Api) -> None:
    await running(api)
    exec_id = await api.client.exec_create("web", {"Cmd": ["true"]})
    await api.client.container_remove("web", force=True)
    with pytest.raises(errors.NotFound, match=f"^No such exec instance: {exec_id}$"):
        await api.client.exec_inspect(exec_id)


# -- detached -------------------------------------------------------------------------------


async def test_a_detached_start_answers_at_once_and_the_exec_ends_on_its_own(api: Api) -> None:
    await running(api)
    exec_id = await api.client.exec_create("web", {"Cmd": ["sleep", "0.5"], "AttachStdout": True})
    reply = await post(api, f"/exec/{exec_id}/start", {"Detach": True})
    assert (reply.status, reply.body) == (200, b"")
    assert (await api.client.exec_inspect(exec_id))["Running"] is True  # answered before the end
    inspected = await ended(api, exec_id)
    assert (inspected["Running"], inspected["ExitCode"]) == (False, 0)
    code = await api.client.exec_create("web", {"Cmd": ["sh", "-c", "exit 5"]})
    await api.client.exec_start_detached(code)
    assert (await ended(api, code))["ExitCode"] == 5


# -- events and ExecIDs ---------------------------------------------------------------------


async def test_exec_events(api: Api) -> None:
    cid = await running(api)
    began = time.time()
    _, inspected = await run_exec(api, "web", ["echo", "hi"])
    exec_id = inspected["ID"]
    _, failed = await run_exec(api, "web", ["sh", "-c", "exit 3"])
    events = [
        event
        async for event in api.client.events(
            since=began, until=time.time(), filters={"container": ["web"]}
        )
        if event["Action"].startswith("exec_")
    ]
    assert {(event["Type"], event["Actor"]["ID"]) for event in events} == {("container", cid)}
    base = {"image": "busybox", "name": "web"}
    assert [(event["Action"], event["Actor"]["Attributes"]) for event in events] == [
        ("exec_create: echo hi", {**base, "execID": exec_id}),
        ("exec_start: echo hi", {**base, "execID": exec_id}),
        ("exec_die", {**base, "execID": exec_id, "exitCode": "0"}),
        ("exec_create: sh -c exit 3", {**base, "execID": failed["ID"]}),
        ("exec_start: sh -c exit 3", {**base, "execID": failed["ID"]}),
        ("exec_die", {**base, "execID": failed["ID"], "exitCode": "3"}),
    ]


async def test_a_command_without_arguments_keeps_dockerds_trailing_space(api: Api) -> None:
    await running(api)
    began = time.time()
    await run_exec(api, "web", ["true"])
    actions = [
        event["Action"]
        async for event in api.client.events(since=began, until=time.time())
        if event["Action"].startswith("exec_")
    ]
    assert actions == ["exec_create: true ", "exec_start: true ", "exec_die"]


async def test_exec_ids_lists_the_execs_not_ended(api: Api) -> None:
    await running(api)
    assert (await api.client.container_inspect("web"))["ExecIDs"] is None
    exec_id = await api.client.exec_create(
        "web", {"Cmd": ["cat"], "AttachStdin": True, "AttachStdout": True}
    )
    # As dockerd's container.ExecCommands: registered at create, removed at the exit.
    assert (await api.client.container_inspect("web"))["ExecIDs"] == [exec_id]
    with anyio.fail_after(10):
        async with api.client.exec_start(exec_id) as session:
            await session.send(b"x")
            assert await session.__aiter__().__anext__() == ("stdout", b"x")
            assert (await api.client.container_inspect("web"))["ExecIDs"] == [exec_id]
            await session.send_eof()
            assert [item async for item in session] == []
    assert (await api.client.container_inspect("web"))["ExecIDs"] is None
    detached = await api.client.exec_create("web", {"Cmd": ["sleep", "0.2"]})
    await api.client.exec_start_detached(detached)
    assert (await api.client.container_inspect("web"))["ExecIDs"] == [detached]
    await ended(api, detached)
    assert (await api.client.container_inspect("web"))["ExecIDs"] is None


# -- the hijacked stream --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upgrade", "status", "content_type"),
    [
        (True, "HTTP/1.1 101 UPGRADED", MULTIPLEXED),
        (False, "HTTP/1.1 200 OK", RAW_STREAM),
    ],
)
async def test_a_non_tty_start_is_hijacked_and_multiplexed(
    api: Api, upgrade: bool, status: str, content_type: str
) -> None:
    await running(api)
    exec_id = await api.client.exec_create(
        "web", {"Cmd": ["echo", "hi"], "AttachStdout": True, "AttachStderr": True}
    )
    with anyio.fail_after(10):
        async with await anyio.connect_unix(api.sock) as stream:
            await stream.send(start_request(exec_id, {"Detach": False, "Tty": False}, upgrade))
            line, headers, rest = await receive_head(stream)
            rest += await read_to_end(stream)
    assert line == status
    assert headers["content-type"] == content_type
    if upgrade:
        assert (headers["connection"], headers["upgrade"]) == ("Upgrade", "tcp")
    # Without a TTY the output is framed either way (dockerd: the old raw hijack's header is a
    # label only).
    assert rest == frame(1, b"hi\n")
    assert (await api.client.exec_inspect(exec_id))["ExitCode"] == 0


async def test_stderr_is_its_own_frame(api: Api) -> None:
    await running(api)
    exec_id = await api.client.exec_create(
        "web", {"Cmd": ["nope"], "AttachStdout": True, "AttachStderr": True}
    )
    with anyio.fail_after(10):
        async with await anyio.connect_unix(api.sock) as stream:
            await stream.send(start_request(exec_id, {"Detach": False}))
            _, _, rest = await receive_head(stream)
            rest += await read_to_end(stream)
    assert rest == frame(2, b"exec: nope: not found\n")


async def test_a_tty_exec_console_size_raw_output_and_resize(tty_api: Api) -> None:
    api = tty_api
    runtime = api.engine.runtime
    assert isinstance(runtime, ConsoleRuntime)
    await running(api)
    exec_id = await api.client.exec_create(
        "web", {"Cmd": ["cat"], "Tty": True, "AttachStdin": True, "AttachStdout": True}
    )
    not_yet = await post(api, f"/exec/{exec_id}/resize?h=10&w=20")
    assert not_yet.status >= 400  # (no terminal before the start)
    body = {"Detach": False, "Tty": True, "ConsoleSize": [40, 120]}
    with anyio.fail_after(10):
        async with await anyio.connect_unix(api.sock) as stream:
            await stream.send(start_request(exec_id, body))
            line, headers, rest = await receive_head(stream)
            assert line == "HTTP/1.1 101 UPGRADED"
            assert headers["content-type"] == RAW_STREAM
            while not runtime.masters:
                await anyio.sleep(0.01)
            process = last_process(api)
            assert process["terminal"] is True
            assert process["consoleSize"] == {"height": 40, "width": 120}
            resized = await post(api, f"/exec/{exec_id}/resize?h=10&w=20")
            assert (resized.status, resized.body) == (200, b"")
            winsize = fcntl.ioctl(runtime.masters[-1], termios.TIOCGWINSZ, bytes(8))
            assert struct.unpack("HHHH", winsize)[:2] == (10, 20)
            halfway = await post(api, f"/exec/{exec_id}/resize?h=10")
            assert halfway.status == 400
            await stream.send(b"hi\n")
            while rest.count(b"hi\r\n") < 2:  # the terminal's echo, then cat's
                rest += await stream.receive()
            await stream.send_eof()  # the terminal's EOF character: cat ends
            rest += await read_to_end(stream)
    assert rest == b"hi\r\nhi\r\n"  # raw: no frame headers
    assert (await api.client.exec_inspect(exec_id))["ExitCode"] == 0


async def test_the_client_reads_a_tty_exec_raw(api: Api) -> None:
    await running(api)
    exec_id = await api.client.exec_create(
        "web", {"Cmd": ["cat"], "Tty": True, "AttachStdin": True, "AttachStdout": True}
    )
    with anyio.fail_after(10):
        async with api.client.exec_start(exec_id) as session:
            await api.client.exec_resize(exec_id, 30, 100)
            await session.send(b"ab\n")
            await session.send_eof()
            output = b"".join([data async for stream, data in session if stream == "stdout"])
    assert output == b"ab\r\nab\r\n"
    assert (await api.client.exec_inspect(exec_id))["ExitCode"] == 0


async def test_a_resize_without_a_width_is_dockerds_400(api: Api) -> None:
    refused(
        await post(api, "/exec/nope/resize?h=10"), 400, 'invalid resize width "": invalid syntax'
    )


async def test_a_resize_wants_both_sizes(api: Api) -> None:
    # Checked before the exec is looked up, as dockerd's router does.
    assert (await post(api, "/exec/nope/resize?h=10")).status == 400
    assert (await post(api, "/exec/nope/resize?w=10")).status == 400


async def test_the_create_console_size_is_used_when_the_start_has_none(api: Api) -> None:
    await running(api)
    exec_id = await api.client.exec_create(
        "web", {"Cmd": ["true"], "Tty": True, "ConsoleSize": [30, 100]}
    )
    await post(api, f"/exec/{exec_id}/start", {"Detach": True, "Tty": True})
    await ended(api, exec_id)
    assert last_process(api)["consoleSize"] == {"height": 30, "width": 100}


# -- docker-py ------------------------------------------------------------------------------


async def test_docker_py_exec(open_engine: OpenEngine, sock: Path) -> None:
    docker = pytest.importorskip("docker")
    # docker-py reads a hijacked stream from the raw socket, past http.client's buffer: output
    # that arrives with the 101 head is lost to it. A real exec takes the runtime a while to
    # start (the fake's, none): as there, the head goes out well before the first output.
    async with open_api(open_engine, sock, runtime=FakeRuntime(delays={"exec": 0.05})) as api:
        await running(api)
        with anyio.fail_after(60):
            await anyio.to_thread.run_sync(_docker_py_exec, docker, f"unix://{api.sock}")


def _docker_py_exec(docker: Any, host: str) -> None:
    client = docker.DockerClient(base_url=host, version="auto")
    try:
        container = client.containers.get("web")
        assert tuple(container.exec_run("echo hi")) == (0, b"hi\n")
        assert container.exec_run(["sh", "-c", "exit 4"]).exit_code == 4
        assert tuple(container.exec_run("nope", demux=True)) == (
            127,
            (None, b"exec: nope: not found\n"),
        )
        assert container.exec_run("pwd", workdir="/tmp").output == b"/tmp\n"
        assert container.exec_run(["id", "-u"], user="1000").output == b"1000\n"
        assert b"X=1\n" in container.exec_run("env", environment={"X": "1"}).output
        assert tuple(container.exec_run("echo hi", tty=True)) == (0, b"hi\r\n")

        created = client.api.exec_create(container.id, ["sleep", "0.1"])
        exec_id = created["Id"]
        assert not client.api.exec_start(exec_id, detach=True)
        deadline = time.monotonic() + 10
        while (inspected := client.api.exec_inspect(exec_id))["Running"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert (inspected["ExitCode"], inspected["ContainerID"]) == (0, container.id)
        with pytest.raises(docker.errors.NotFound) as missing:
            client.api.exec_inspect("nope")
        assert missing.value.explanation == "No such exec instance: nope"
    finally:
        client.close()
