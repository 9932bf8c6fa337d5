"""The real ``docker`` CLI (28.x) and docker-py against the Engine API, on real containers.

Each test opens a daemon on runc, serves the API on a unix socket in the test's own event loop
and runs the CLI as a subprocess (or docker-py in a worker thread), as a user would. These need
what ``test_runc`` needs, plus the docker CLI (client only: no dockerd runs). Every test checks
that nothing is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

import asyncstart

from . import test_runc
from .helpers import real_containers, remove_bridge
from .test_runc import _Roots, assert_nothing_left, open_clean

pytestmark = real_containers(("needs the docker CLI", shutil.which("docker") is None))

# A bridge and subnet of this module's own, removed when the module is done.
BRIDGE = "ascli0"
SUBNET = "10.213.88.0/24"
#: Generous: a CLI call that takes this long is hung, not slow.
CLI_TIMEOUT = 30


#: The session's busybox image archive, shared with test_runc.
busybox_tar = test_runc.busybox_tar


@pytest.fixture(scope="module", autouse=True)
def _own_bridge() -> Iterator[None]:
    yield
    remove_bridge(BRIDGE)


@dataclass
class Cli:
    """The docker CLI pointed at one served daemon."""

    sock: Path
    env: dict[str, str]

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def argv(self, *args: str) -> list[str]:
        return ["docker", "-H", self.host, *args]

    async def run(
        self, *args: str, input: bytes | None = None, ok: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        with anyio.fail_after(CLI_TIMEOUT):
            result = await anyio.run_process(
                self.argv(*args),
                input=input,
                stdin=subprocess.DEVNULL if input is None else None,
                check=False,
                env=self.env,
            )
        if ok and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {result.returncode}: {result.stderr.decode()}"
            )
        return result

    async def out(self, *args: str) -> str:
        return (await self.run(*args)).stdout.decode()

    async def fails(self, *args: str) -> str:
        """Run a command that must fail; its stderr."""
        result = await self.run(*args, ok=False)
        assert result.returncode != 0, result.stdout
        return result.stderr.decode()


@asynccontextmanager
async def served(
    tmp_path: Path, busybox: Path | None, *, bridge: str = BRIDGE, subnet: str = SUBNET
) -> AsyncIterator[Cli]:
    """A runc daemon (with busybox:latest unless ``busybox`` is None) served on a socket."""
    roots = _Roots(tmp_path)
    config = asyncstart.DaemonConfig(
        data_root=roots.data,
        exec_root=roots.exec,
        runtime="runc",
        bridge=bridge,
        bridge_subnet=subnet,
    )
    (tmp_path / "cfg").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env |= {"DOCKER_CONFIG": str(tmp_path / "cfg"), "DOCKER_CLI_HINTS": "false"}
    sock = tmp_path / "s.sock"
    async with open_clean(config) as daemon:
        if busybox is not None:
            await daemon.image_import(str(busybox), repo="busybox", tag="latest")
        async with asyncstart.serve_api(daemon, [f"unix://{sock}"]):
            yield Cli(sock, env)
    assert not sock.exists()
    assert_nothing_left(roots)
    ports = subprocess.run(["ip", "-o", "link", "show", "master", bridge], capture_output=True,
                           text=True, check=False).stdout  # fmt: skip
    assert ports == "", f"veths left on {bridge}: {ports}"


def _row(table: str, name: str) -> str:
    """The line of a ``docker ps`` table that ends with the container name."""
    rows = [line for line in table.splitlines()[1:] if line.split()[-1] == name]
    assert len(rows) == 1, table
    return rows[0]


async def test_cli_lifecycle(tmp_path: Path, busybox_tar: Path) -> None:
    async with served(tmp_path, busybox_tar) as cli:
        script = "echo out; echo err >&2; sleep 100"
        cid = (await cli.out("create", "--name", "web", "busybox", "sh", "-c", script)).strip()
        assert len(cid) == 64
        assert "Created" in _row(await cli.out("ps", "-a"), "web")
        assert await cli.out("start", "web") == "web\n"
        row = _row(await cli.out("ps"), "web")
        assert row.startswith(cid[:12]) and " Up " in row and '"sh -c echo out' in row
        inspect = await cli.out("inspect", "-f", "{{.State.Status}} {{.State.Pid}}", "web")
        status, pid = inspect.split()
        assert status == "running"
        # The container's own process (busybox sh execs its last command, the sleep).
        assert Path(f"/proc/{pid}/cmdline").read_bytes() in (
            b"sleep\x00100\x00",
            b"sh\x00-c\x00" + script.encode() + b"\x00",
        )
        assert cid in Path(f"/proc/{pid}/cgroup").read_text()

        # Wait for both lines with a follow (they may not be written yet), then read plainly.
        async with await anyio.open_process(
            cli.argv("logs", "--follow", "web"), stdin=subprocess.DEVNULL, env=cli.env
        ) as follow:
            assert follow.stdout is not None and follow.stderr is not None
            with anyio.fail_after(CLI_TIMEOUT):
                assert await follow.stdout.receive() == b"out\n"
                assert await follow.stderr.receive() == b"err\n"
            follow.terminate()
        logs = await cli.run("logs", "web")
        assert (logs.stdout, logs.stderr) == (b"out\n", b"err\n")

        # Pid 1 (the sleep) has no TERM handler, so TERM is ignored: the stop ends in KILL
        # after its one second, as with dockerd.
        assert await cli.out("stop", "-t", "1", "web") == "web\n"
        assert not Path(f"/proc/{pid}").exists()
        code = await cli.out("inspect", "-f", "{{.State.ExitCode}} {{.State.Status}}", "web")
        assert code.split() == ["137", "exited"]
        assert await cli.out("wait", "web") == "137\n"

        # Again: a stopped container starts anew, and a kill ends it.
        await cli.out("start", "web")
        new_pid = (await cli.out("inspect", "-f", "{{.State.Pid}}", "web")).strip()
        assert new_pid not in (pid, "0")
        assert await cli.out("kill", "web") == "web\n"
        assert await cli.out("wait", "web") == "137\n"
        assert "Exited (137)" in _row(await cli.out("ps", "-a"), "web")
        assert await cli.out("ps", "-q") == ""
        assert await cli.out("logs", "web") == "out\nout\n"

        assert await cli.out("rm", "web") == "web\n"
        assert await cli.fails("container", "inspect", "web") == (
            "Error response from daemon: No such container: web\n"
        )
        assert await cli.out("ps", "-aq") == ""


async def test_cli_run(tmp_path: Path, busybox_tar: Path) -> None:
    async with served(tmp_path, busybox_tar) as cli:
        version = await cli.out("version", "-f", "{{.Server.APIVersion}} {{.Client.APIVersion}}")
        assert version == "1.51 1.50\n"
        hi = await cli.run("run", "--rm", "busybox", "echo", "hi")
        assert (hi.returncode, hi.stdout, hi.stderr) == (0, b"hi\n", b"")
        assert await cli.out("ps", "-aq") == "", "--rm: the daemon removed it before run ended"

        three = await cli.run("run", "--name", "three", "busybox", "sh", "-c", "exit 3", ok=False)
        assert three.returncode == 3, three.stderr
        assert "Exited (3)" in _row(await cli.out("ps", "-a"), "three")
        # The CLI's own failure (125) is not the container's: an image nobody has.
        missing = await cli.run("run", "--rm", "nosuchimage", "true", ok=False)
        assert missing.returncode == 125
        assert b"No such image: docker.io/library/nosuchimage" in missing.stderr
        assert (await cli.out("ps", "-aq")).split() == [
            (await cli.out("inspect", "-f", "{{.Id}}", "three")).strip()[:12]
        ]
        await cli.out("rm", "three")

        # Detached: the ID at once; the container runs on until stopped.
        cid = (await cli.out("run", "-d", "--name", "bg", "busybox", "sleep", "100")).strip()
        assert await cli.out("inspect", "-f", "{{.State.Running}}", cid) == "true\n"
        await cli.out("rm", "-f", "bg")
        assert await cli.out("ps", "-aq") == ""


async def test_cli_run_with_stdin(tmp_path: Path, busybox_tar: Path) -> None:
    data = b"hello stdin\n" * 1000
    async with served(tmp_path, busybox_tar) as cli:
        echoed = await cli.run("run", "-i", "--rm", "busybox", "cat", input=data)
        assert (echoed.returncode, echoed.stdout, echoed.stderr) == (0, data, b"")
        script = "wc -c; echo done >&2; exit 5"
        counted = await cli.run("run", "-i", "--rm", "busybox", "sh", "-c", script, input=data,
                                ok=False)  # fmt: skip
        assert counted.returncode == 5
        assert (counted.stdout.strip(), counted.stderr) == (str(len(data)).encode(), b"done\n")
        # Without -i the container's stdin is empty: cat ends at once.
        empty = await cli.run("run", "--rm", "busybox", "cat", input=data)
        assert empty.stdout == b""
        assert await cli.out("ps", "-aq") == ""


async def test_cli_import_and_images(tmp_path: Path, busybox_tar: Path) -> None:
    async with served(tmp_path, None) as cli:
        assert await cli.out("images", "-q") == ""
        image_id = (await cli.out("import", str(busybox_tar), "myimg:1")).strip()
        assert image_id.startswith("sha256:") and len(image_id) == 71
        table = (await cli.out("images")).splitlines()
        assert table[0].split()[:3] == ["REPOSITORY", "TAG", "IMAGE"]
        assert [row.split()[:3] for row in table[1:]] == [["myimg", "1", image_id[7:19]]]
        assert await cli.out("image", "inspect", "-f", "{{.Id}}", "myimg:1") == image_id + "\n"
        ok = await cli.run("run", "--rm", "myimg:1", "echo", "ok")
        assert (ok.returncode, ok.stdout) == (0, b"ok\n")
        # An image only by its repository is :latest, which this one is not.
        latest = await cli.run("run", "--rm", "myimg", "true", ok=False)
        assert latest.returncode == 125
        assert latest.stderr.startswith(b"Unable to find image 'myimg:latest' locally\n")
        removed = await cli.out("rmi", "myimg:1")
        # (dockerd goes on with a "Deleted: <chain ID>" line per layer it deleted.)
        assert removed.splitlines()[:2] == ["Untagged: myimg:1", f"Deleted: {image_id}"]
        assert await cli.out("images", "-q") == ""


async def test_cli_events(tmp_path: Path, busybox_tar: Path) -> None:
    async with served(tmp_path, busybox_tar) as cli:
        # Followed: a stream from a moment ago (no --until) replays what it missed, then goes
        # on live, each event once; it ends only when we end it.
        follow_since = f"{time.time():.9f}"
        argv = cli.argv("events", "--since", follow_since, "--filter", "container=live",
                        "--format", "{{.Action}}")  # fmt: skip
        async with await anyio.open_process(argv, stdin=subprocess.DEVNULL, env=cli.env) as live:
            assert live.stdout is not None
            # Detached (-d): an attached run has an attach event too (dockerd's; not here yet).
            await cli.out("run", "-d", "--rm", "--name", "live", "busybox", "true")
            seen = b""
            with anyio.fail_after(CLI_TIMEOUT):
                while not seen.endswith(b"destroy\n"):
                    seen += await live.stdout.receive()
            live.terminate()
        assert seen.decode().split() == ["create", "start", "die", "destroy"]

        # Replayed: a window of the past, filtered.
        since = time.time()
        cid = (await cli.out("create", "--name", "ev", "busybox", "sh", "-c", "exit 7")).strip()
        await cli.out("start", "ev")
        assert await cli.out("wait", "ev") == "7\n"
        await cli.out("rm", "ev")
        until = time.time()
        window = ["--since", f"{since:.9f}", "--until", f"{until:.9f}"]
        fmt = "{{.Type}} {{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}}"
        lines = await cli.out("events", *window, "--filter", "container=ev", "--format", fmt)
        assert lines.splitlines() == [
            f"container {action} {cid} ev" for action in ("create", "start", "die", "destroy")
        ]
        die = await cli.out(
            "events", *window, "--filter", "event=die", "--format", "{{.Actor.Attributes.exitCode}}"
        )
        assert die == "7\n"
        # The live container is before the window; both are of the same image.
        everything = await cli.out("events", "--since", "0", "--until", f"{until:.9f}",
                                   "--filter", "type=container", "--filter", "image=busybox",
                                   "--format", "{{.Actor.Attributes.name}}")  # fmt: skip
        assert everything.split() == ["live"] * 4 + ["ev"] * 4


async def _with_docker_py(tmp_path: Path, busybox_tar: Path, work: Callable[[Any], None]) -> None:
    """Run ``work(client)`` with a docker-py client of a served daemon (in a worker thread:
    docker-py blocks), closing the client after."""
    import docker

    def run(host: str) -> None:
        client = docker.DockerClient(base_url=host, version="auto")
        try:
            work(client)
        finally:
            client.close()

    async with served(tmp_path, busybox_tar) as cli:
        with anyio.fail_after(60):
            await anyio.to_thread.run_sync(run, cli.host)


async def test_docker_py(tmp_path: Path, busybox_tar: Path) -> None:
    import docker

    def work(client: docker.DockerClient) -> None:
        assert client.api.api_version == "1.51" and client.ping() is True
        assert client.images.get("busybox").tags == ["busybox:latest"]
        both = ["sh", "-c", "echo hi; echo err >&2"]
        out = client.containers.run("busybox", both, remove=True, stderr=True)
        # Two pipes: the order between stdout and stderr is not defined (nor in dockerd).
        assert sorted(out.splitlines()) == [b"err", b"hi"]
        assert client.containers.run("busybox", both, remove=True) == b"hi\n"
        with pytest.raises(docker.errors.ContainerError) as failed:
            client.containers.run("busybox", ["sh", "-c", "echo bad >&2; exit 2"], remove=True)
        assert (failed.value.exit_status, failed.value.stderr) == (2, b"bad\n")
        assert client.containers.list(all=True) == []

        # Attached before the start, the stream has all the output and ends with the exit.
        script = "for i in 1 2 3; do echo line$i; done; echo e >&2"
        container = client.containers.create("busybox", ["sh", "-c", script], name="pyc")
        stream = container.attach(stdout=True, stderr=True, stream=True, logs=True, demux=True)
        container.start()
        frames = list(stream)
        stdout = b"".join(out for out, _ in frames if out)
        assert stdout == b"line1\nline2\nline3\n"
        assert b"".join(err for _, err in frames if err) == b"e\n"
        assert container.wait() == {"StatusCode": 0}
        assert container.logs(stderr=False) == stdout
        assert container.logs(stdout=False) == b"e\n"
        assert sorted(container.logs().splitlines()) == [b"e", b"line1", b"line2", b"line3"]
        container.reload()
        assert (container.status, container.name) == ("exited", "pyc")
        assert container.attrs["State"]["ExitCode"] == 0
        container.remove()
        with pytest.raises(docker.errors.NotFound):
            client.containers.get("pyc")

        # A detached one: pause, unpause, stop.
        sleeper = client.containers.run("busybox", ["sleep", "100"], detach=True)
        sleeper.pause()
        sleeper.reload()
        assert sleeper.status == "paused"
        sleeper.unpause()
        sleeper.reload()
        assert sleeper.status == "running"
        sleeper.stop(timeout=1)
        assert sleeper.wait() == {"StatusCode": 137}
        sleeper.remove()

        with pytest.raises(docker.errors.NotFound) as missing:
            client.containers.get("nosuch")
        assert missing.value.status_code == 404
        assert missing.value.explanation == "No such container: nosuch"
        assert client.containers.list(all=True) == []

    await _with_docker_py(tmp_path, busybox_tar, work)


async def test_cli_errors(tmp_path: Path, busybox_tar: Path) -> None:
    import docker

    async with served(tmp_path, busybox_tar) as cli:
        for command in ("start", "stop", "kill", "rm", "wait", "logs"):
            result = await cli.run(command, "nosuch", ok=False)
            assert result.returncode == 1, command
            assert b"Error response from daemon: No such container: nosuch\n" in result.stderr
        invalid = await cli.fails("create", "--name", "a/b", "busybox", "true")
        assert invalid == (
            "Error response from daemon: Invalid container name (a/b), only "
            "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed\n"
        )
        first = (await cli.out("create", "--name", "dup", "busybox", "true")).strip()
        assert await cli.fails("create", "--name", "dup", "busybox", "true") == (
            'Error response from daemon: Conflict. The container name "/dup" is already in use '
            f'by container "{first}". You have to remove (or rename) that container to be able '
            "to reuse that name.\n"
        )
        assert "is not running" in await cli.fails("kill", "dup")

        await cli.out("run", "-d", "--name", "busy", "busybox", "sleep", "100")
        # Starting a running container is no error (dockerd's 304): the CLI says its name.
        assert await cli.out("start", "busy") == "busy\n"
        assert await cli.fails("rm", "busy") == (
            'Error response from daemon: cannot remove container "/busy": container is running: '
            "stop the container before removing or force remove\n"
        )

        def conflict_status(host: str) -> int:
            client = docker.APIClient(base_url=host, version="auto")
            try:
                with pytest.raises(docker.errors.APIError) as refused:
                    client.remove_container("busy")
                return int(refused.value.status_code or 0)
            finally:
                client.close()

        assert await anyio.to_thread.run_sync(conflict_status, cli.host) == 409
        assert await cli.out("rm", "-f", "busy", "dup") == "busy\ndup\n"
        assert await cli.out("ps", "-aq") == ""


async def _read_a_little_and_hang_up(cli: Cli, *args: str) -> bytes:
    """Run the CLI with its stdout on a pipe, read a little, close the pipe; wait for the CLI
    to die of it (anyio's own process pipes are not closed by their ``aclose`` on asyncio)."""
    read_end, write_end = os.pipe()
    try:
        async with await anyio.open_process(
            cli.argv(*args), stdin=subprocess.DEVNULL, stdout=write_end, env=cli.env
        ) as process:
            os.close(write_end)
            write_end = -1
            with anyio.fail_after(CLI_TIMEOUT):
                await anyio.wait_readable(read_end)
                first = os.read(read_end, 2)
                os.close(read_end)
                read_end = -1
                assert await process.wait() != 0
        return first
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)


async def test_a_client_gone_mid_stream_leaves_the_server_up(
    tmp_path: Path, busybox_tar: Path
) -> None:
    async with served(tmp_path, busybox_tar) as cli:
        # Four megabytes in a thousand lines (not millions: each line is a log entry).
        line = "y" * 3999
        flood = ("sh", "-c", f"yes {line} | head -n 1000")
        # An attached run, then its logs: each CLI dies on its closed stdout (as under `| head`)
        # while the server still has megabytes to send it.
        for argv in (("run", "--name", "flood", "busybox", *flood), ("logs", "flood")):
            assert await _read_a_little_and_hang_up(cli, *argv) == b"yy"
            with anyio.fail_after(CLI_TIMEOUT):
                assert await cli.out("wait", "flood") == "0\n"
        assert await cli.out("logs", "--tail", "1", "flood") == line + "\n"
        assert await cli.out("rm", "flood") == "flood\n"


async def test_reason_phrases_reach_docker_py(tmp_path: Path) -> None:
    import docker

    def message(host: str) -> str:
        client = docker.DockerClient(base_url=host, version="auto")
        try:
            with pytest.raises(docker.errors.NotFound) as missing:
                client.containers.get("nosuch")
            return str(missing.value)
        finally:
            client.close()

    async with served(tmp_path, None) as cli:
        text = await anyio.to_thread.run_sync(message, cli.host)
    assert text.endswith('/containers/nosuch/json: Not Found ("No such container: nosuch")')


async def test_an_attached_run_has_an_attach_event(tmp_path: Path, busybox_tar: Path) -> None:
    async with served(tmp_path, busybox_tar) as cli:
        since = time.time()
        await cli.out("run", "--rm", "--name", "attached", "busybox", "true")
        window = ["--since", f"{since:.9f}", "--until", f"{time.time():.9f}"]
        actions = await cli.out(
            "events", *window, "--filter", "container=attached", "--format", "{{.Action}}"
        )
    assert actions.split() == ["create", "attach", "start", "die", "destroy"]


async def test_cli_networks(tmp_path: Path, busybox_tar: Path) -> None:
    async with served(tmp_path, busybox_tar) as cli:
        listed = await cli.out("network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}")
        assert listed.splitlines() == ["bridge bridge local", "host host local", "none null local"]
        await cli.out("run", "-d", "--name", "web", "busybox", "sleep", "1000")
        inspected = json.loads(await cli.out("network", "inspect", "bridge"))[0]
        assert inspected["IPAM"]["Config"] == [{"Subnet": SUBNET, "Gateway": "10.213.88.1"}]
        web = (await cli.out("inspect", "--format", "{{.Id}}", "web")).strip()
        entry = inspected["Containers"][web]
        assert entry["Name"] == "web" and entry["IPv4Address"].startswith("10.213.88.")
        assert "is a pre-defined network and cannot be removed" in await cli.fails(
            "network", "rm", "bridge"
        )
        mine = (await cli.out("network", "create", "mine")).strip()
        assert "already exists" in await cli.fails("network", "create", "mine")
        assert (await cli.out("network", "rm", mine[:12])).strip() == mine[:12]
        await cli.out("rm", "-f", "web")


async def test_cli_exec(tmp_path: Path, busybox_tar: Path) -> None:
    """``docker exec`` as a user runs it, on both runtimes (crun takes a console socket for a
    terminal; runc proxies its own), and docker-py's ``exec_run``."""
    import docker

    async with served(tmp_path, busybox_tar) as cli:
        await cli.out("run", "-d", "--name", "web", "-e", "FOO=bar", "busybox", "sleep", "1000")
        await cli.out("run", "-d", "--name", "web-runc", "--runtime", "runc", "busybox",
                      "sleep", "1000")  # fmt: skip
        for name in ("web", "web-runc"):
            assert await cli.out("exec", name, "echo", "hello") == "hello\n"
            # The container's process is the model: its environment, the exec's own added.
            script = "echo $FOO $X; pwd; id -u"
            got = await cli.out("exec", "-e", "X=1", "-w", "/tmp", "-u", "nobody", name,
                                "sh", "-c", script)  # fmt: skip
            assert got == ("bar 1\n" if name == "web" else "1\n") + "/tmp\n65534\n"
            assert (await cli.run("exec", name, "sh", "-c", "exit 3", ok=False)).returncode == 3
            piped = await cli.run("exec", "-i", name, "cat", input=b"abc\n")
            assert piped.stdout == b"abc\n"
            missing = await cli.run("exec", name, "nope", ok=False)
            assert missing.returncode == 127 and b"OCI runtime exec failed" in missing.stderr
            # A terminal of the container's own devpts (its size from the start).
            tty = await cli.out("exec", "-t", name, "tty")
            assert tty.startswith("/dev/pts/"), tty
        # docker top: the host's ps of the container's processes (an exec's too).
        await cli.out("exec", "-d", "web", "sleep", "30")
        with anyio.fail_after(10):  # (a detached exec is on its way when the CLI returns)
            while len(top := (await cli.out("top", "web", "-o", "pid,args")).splitlines()) < 3:
                await anyio.sleep(0.05)
        assert top[0].split() == ["PID", "COMMAND"]
        assert sorted(line.split(None, 1)[1] for line in top[1:]) == ["sleep 1000", "sleep 30"]
        # Detached: it runs on, and inspect lists it while it does.
        await cli.out("exec", "-d", "web", "sleep", "2")
        listed = json.loads(await cli.out("inspect", "-f", "{{json .ExecIDs}}", "web"))
        assert listed and len(listed[0]) == 64
        await cli.out("stop", "-t", "0", "web-runc")
        assert "is not running" in await cli.fails("exec", "web-runc", "echo")
        assert "is not running" in await cli.fails("top", "web-runc")

        def exec_run(host: str) -> tuple[int, bytes, int]:
            client = docker.DockerClient(base_url=host, version="auto")
            try:
                container = client.containers.get("web")
                code, output = container.exec_run(["echo", "hi"])
                failed = container.exec_run(["sh", "-c", "exit 4"]).exit_code
                return code, output, failed
            finally:
                client.close()

        assert await anyio.to_thread.run_sync(exec_run, cli.host) == (0, b"hi\n", 4)
        # docker history: the imported image's one layer.
        history = await cli.out("history", "--format", "{{.CreatedBy}}|{{.Comment}}", "busybox")
        assert history == "asyncstart import|Imported from tarball\n"
        # docker diff: what the container changed of its image (running or not).
        await cli.out("exec", "web", "sh", "-c", "touch /etc/passwd; mkdir /new; rm /bin/ls")
        assert (await cli.out("diff", "web")).splitlines() == [
            "C /bin", "D /bin/ls", "C /etc", "C /etc/passwd", "A /new",
        ]  # fmt: skip
        # docker export: the whole filesystem, the container's changes in it; of a stopped
        # container too (mounted for the while).
        for name, removed in (("web", True), ("web-runc", False)):
            exported = (await cli.run("export", name)).stdout
            listed = subprocess.run(["tar", "-tf", "-"], input=exported, check=True,
                                    capture_output=True)  # fmt: skip
            names = listed.stdout.decode().splitlines()
            assert "bin/busybox" in names and ("new/" in names) == removed
            assert ("bin/ls" in names) != removed
        await cli.out("rm", "-f", "web", "web-runc")


async def test_cli_image_prune(tmp_path: Path, busybox_tar: Path) -> None:
    async with served(tmp_path, busybox_tar) as cli:
        first = (await cli.out("images", "-q", "--no-trunc", "busybox")).strip()
        await cli.out("run", "--name", "user", "busybox", "true")
        # Two images named other:1 one after the other: the first dangles.
        dangling = (await cli.out("import", "-c", "ENV V=1", str(busybox_tar), "other:1")).strip()
        kept = (await cli.out("import", "-c", "ENV V=2", str(busybox_tar), "other:1")).strip()
        pruned = await cli.out("image", "prune", "-f")
        assert f"deleted: {dangling}" in pruned
        assert sorted((await cli.out("images", "-q", "--no-trunc")).split()) == sorted(
            [first, kept]
        )
        # docker system df: the image a container uses is active, its size not reclaimable.
        df = [line.split()[:3] for line in (await cli.out("system", "df")).splitlines()]
        assert ["Images", "2", "1"] in df and ["Containers", "1", "0"] in df
        # Not only dangling ones: every unused image; busybox stays, a container uses it.
        await cli.out("image", "prune", "-a", "-f")
        assert (await cli.out("images", "-q", "--no-trunc")).split() == [first]
        await cli.out("rm", "user")


async def test_cli_update(tmp_path: Path, busybox_tar: Path) -> None:
    """docker update: the restart policy is applied (a kill then restarts the container);
    resource limits reach the running container's cgroups through the runtime."""
    async with served(tmp_path, busybox_tar) as cli:
        await cli.out("run", "-d", "--name", "web", "busybox", "sleep", "1000")
        assert (await cli.out("update", "--restart", "always", "web")).strip() == "web"
        policy = await cli.out("inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", "web")
        assert policy.strip() == "always"
        pid = (await cli.out("inspect", "-f", "{{.State.Pid}}", "web")).strip()
        os.kill(int(pid), 9)  # the process dies; the new policy brings it back
        with anyio.fail_after(10):
            while (await cli.out("inspect", "-f", "{{.RestartCount}}", "web")).strip() == "0":
                await anyio.sleep(0.1)
        # dockerd's 409: no swap limit yet, so memory alone cannot grow past it.
        refused = await cli.fails("update", "--memory", "64m", "web")
        assert "update the memoryswap at the same time" in refused
        await cli.out("rm", "-f", "web")
        for runtime in ["runc", *(["crun"] if shutil.which("crun") else [])]:
            await _limits_reach_the_cgroups(cli, runtime)


async def _limits_reach_the_cgroups(cli: Cli, runtime: str) -> None:
    await cli.out("run", "-d", "--runtime", runtime, "--name", "lim", "busybox", "sleep", "1000")
    limits = ("--memory", "64m", "--memory-swap", "128m", "--cpus", "0.5", "--pids-limit", "20")
    assert (await cli.out("update", *limits, "lim")).strip() == "lim"
    pid = (await cli.out("inspect", "-f", "{{.State.Pid}}", "lim")).strip()
    cgroups = Path("/sys/fs/cgroup")
    # Where the runtime put its cgroups (runc places a relative path under its own).
    joined = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            joined[controller] = path.lstrip("/")

    def limit(controller: str, name: str) -> str:
        return (cgroups / controller / joined[controller] / name).read_text().strip()

    v1 = (cgroups / "memory").is_dir()  # cgroup v1: this project's CI host
    if v1:
        assert limit("memory", "memory.limit_in_bytes") == str(64 << 20), runtime
        assert limit("memory", "memory.memsw.limit_in_bytes") == str(128 << 20), runtime
        assert limit("cpu", "cpu.cfs_quota_us") == "50000", runtime
    else:
        assert limit("", "memory.max") == str(64 << 20), runtime
    assert limit("pids" if v1 else "", "pids.max") == "20", runtime
    host = json.loads(await cli.out("inspect", "-f", "{{json .HostConfig}}", "lim"))
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (64 << 20, 5 * 10**8, 20)
    await cli.out("update", "--pids-limit", "-1", "lim")  # lifted
    # (crun cannot write "max": it gets the kernel's most pids, which nothing is above.)
    assert limit("pids" if v1 else "", "pids.max") in ("max", str(1 << 22)), runtime
    await cli.out("rm", "-f", "lim")


async def test_cli_stats(tmp_path: Path, busybox_tar: Path) -> None:
    """docker stats reads the container's cgroups and its network namespace; one that does
    not run shows dockerd's empty figures."""
    async with served(tmp_path, busybox_tar) as cli:
        await cli.out("run", "-d", "--name", "busy", "--memory", "64m", "--pids-limit", "30",
                      "busybox", "sh", "-c", "sleep 1000 & sleep 1000; true")  # fmt: skip
        await cli.out("create", "--name", "idle", "busybox", "true")
        rows = {}
        for line in (await cli.out("stats", "--no-stream", "--format", "{{json .}}")).split("\n"):
            if line.strip():
                row = json.loads(line)
                rows[row["Name"]] = row
        assert set(rows) == {"busy"}  # (running ones only, as dockerd's CLI asks)
        busy = rows["busy"]
        assert busy["MemUsage"].endswith(" / 64MiB") and busy["PIDs"] == "3"
        assert busy["CPUPerc"].endswith("%") and busy["NetIO"] != "--"
        idle = json.loads(await cli.out("stats", "--no-stream", "--format", "{{json .}}", "idle"))
        assert (idle["MemUsage"], idle["PIDs"]) == ("0B / 0B", "0")
        refused = await cli.fails("stats", "--no-stream", "nope")
        assert "No such container: nope" in refused
        await cli.out("rm", "-f", "busy", "idle")


async def test_cli_save_and_commit(tmp_path: Path, busybox_tar: Path) -> None:
    """docker save, then load of what it wrote (the same image); docker commit of a
    container's changes (a file added, one removed, a --change), run from the new image."""
    async with served(tmp_path, busybox_tar) as cli:
        first = (await cli.out("images", "-q", "--no-trunc", "busybox")).strip()
        saved = tmp_path / "saved.tar"
        await cli.out("save", "-o", str(saved), "busybox")
        await cli.out("rmi", "busybox")
        loaded = await cli.out("load", "-i", str(saved))
        assert "busybox:latest" in loaded
        assert (await cli.out("images", "-q", "--no-trunc", "busybox")).strip() == first
        assert "No such image: nope:latest" in await cli.fails("save", "-o", str(saved), "nope")
        await cli.out("run", "--name", "changed", "busybox", "sh", "-c",
                      "echo hi > /greeting && rm /bin/ls")  # fmt: skip
        image = (await cli.out("commit", "-c", "ENV A=1", "-m", "why", "changed", "mine:1")).strip()
        assert image.startswith("sha256:")
        script = "cat /greeting; echo $A; [ -e /bin/ls ] || echo gone"
        out = await cli.out("run", "--rm", "mine:1", "sh", "-c", script)
        assert out.splitlines() == ["hi", "1", "gone"]
        history = await cli.out("history", "--format", "{{.Comment}}", "mine:1")
        assert history.splitlines()[0] == "why"
        await cli.out("rm", "changed")
        await cli.out("rmi", "mine:1")


async def test_cli_cp(tmp_path: Path, busybox_tar: Path) -> None:
    """docker cp both ways, into a running and a stopped container, through a bind mount and
    a symlink (resolved in the container, never on the host); hostile tars refused."""
    import io
    import tarfile

    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in-volume.txt").write_text("from the host's bind\n")
    host_file = tmp_path / "host.txt"
    host_file.write_text("to the container\n")
    out = tmp_path / "out"
    out.mkdir()
    async with served(tmp_path, busybox_tar) as cli:
        await cli.out("run", "-d", "--name", "box", "-v", f"{shared}:/shared", "busybox",
                      "sleep", "1000")  # fmt: skip
        await cli.out("cp", str(host_file), "box:/tmp/")
        assert await cli.out("exec", "box", "cat", "/tmp/host.txt") == "to the container\n"
        await cli.out("cp", "box:/shared/in-volume.txt", str(out / "v.txt"))
        assert (out / "v.txt").read_text() == "from the host's bind\n"
        await cli.out("exec", "box", "ln", "-s", "/etc", "/tmp/etc-link")
        await cli.out("cp", "box:/tmp/etc-link/hostname", str(out / "hostname"))
        short_id = (await cli.out("inspect", "-f", "{{.Id}}", "box")).strip()[:12]
        assert (out / "hostname").read_text().strip() == short_id  # the container's file
        await cli.out("cp", "box:/etc", str(out / "etc"))
        assert (out / "etc" / "hostname").exists()
        missing = await cli.fails("cp", "box:/nope", str(out / "x"))
        assert "Could not find the file /nope in container box" in missing
        # A stopped container: its layer is mounted for the copy, then not.
        await cli.out("create", "--name", "idle", "busybox", "true")
        await cli.out("cp", str(host_file), "idle:/")
        await cli.out("cp", "idle:/host.txt", str(out / "back.txt"))
        assert (out / "back.txt").read_text() == "to the container\n"
        # Hostile tars: a name leaving the directory, a link then a write through it.
        async with asyncstart.Client(cli.host) as client:
            for members in (
                [("../../escaped.txt", None)],
                [("up", "../../../.."), ("up/escaped.txt", None)],
            ):
                buffer = io.BytesIO()
                with tarfile.open(fileobj=buffer, mode="w") as archive:
                    for name, link in members:
                        info = tarfile.TarInfo(name)
                        if link is None:
                            info.size = 3
                            archive.addfile(info, io.BytesIO(b"bad"))
                        else:
                            info.type, info.linkname = tarfile.SYMTYPE, link
                            archive.addfile(info)

                async def body(data: bytes = buffer.getvalue()) -> AsyncIterator[bytes]:
                    yield data

                with pytest.raises(asyncstart.errors.DockerError) as refused:
                    await client.container_extract("box", "/tmp", body())
                assert refused.value.status == 400, refused.value.message
        assert not list(tmp_path.rglob("escaped.txt"))
        await cli.out("rm", "-f", "box", "idle")


async def test_cli_volumes(tmp_path: Path) -> None:
    """docker volume create, ls, inspect, rm and prune, as dockerd answers them."""
    async with served(tmp_path, None) as cli:
        assert (await cli.out("volume", "create", "--label", "a=b", "data")).strip() == "data"
        anonymous = (await cli.out("volume", "create")).strip()
        listed = (await cli.out("volume", "ls", "-q")).split()
        assert sorted(listed) == sorted(["data", anonymous])
        mountpoint = (await cli.out("volume", "inspect", "-f", "{{.Mountpoint}}", "data")).strip()
        assert Path(mountpoint).is_dir() and str(tmp_path) in mountpoint
        assert "no such volume" in await cli.fails("volume", "inspect", "nope")
        pruned = await cli.out("volume", "prune", "-f")
        assert anonymous in pruned and "data" not in pruned.split()
        assert (await cli.out("volume", "rm", "data")).strip() == "data"
        assert (await cli.out("volume", "ls", "-q")).strip() == ""


async def test_cli_named_and_anonymous_volumes_in_containers(
    tmp_path: Path, busybox_tar: Path
) -> None:
    """-v name:/path outlives its container; the image's content at the path is copied up
    into a new volume; docker rm -v takes the anonymous ones; a volume in use stays."""
    async with served(tmp_path, busybox_tar) as cli:
        await cli.out("run", "--name", "writer", "-v", "data:/data", "busybox", "sh", "-c",
                      "echo kept > /data/f")  # fmt: skip
        assert await cli.out("run", "--rm", "-v", "data:/data", "busybox", "cat", "/data/f") == (
            "kept\n"
        )
        # Copied up: a new volume over /etc starts with the image's /etc.
        out = await cli.out("run", "--rm", "-v", "etcvol:/etc", "busybox", "ls", "/etc")
        assert "passwd" in out.split()
        assert "in use" in await cli.fails("volume", "rm", "data")
        await cli.out("run", "--name", "anon", "-v", "/scratch", "busybox", "true")
        anonymous = (await cli.out("inspect", "-f", "{{(index .Mounts 0).Name}}", "anon")).strip()
        assert anonymous in (await cli.out("volume", "ls", "-q")).split()
        await cli.out("rm", "-v", "anon")
        assert anonymous not in (await cli.out("volume", "ls", "-q")).split()
        await cli.out("rm", "writer")
        await cli.out("volume", "rm", "data", "etcvol")
        # A bind's host directory that does not exist is made at the start, as dockerd's.
        made = tmp_path / "made" / "deep"
        await cli.out("run", "--rm", "-v", f"{made}:/mnt", "busybox", "sh", "-c",
                      "echo x > /mnt/f")  # fmt: skip
        assert (made / "f").read_text() == "x\n"


async def test_docker_py_everyday_api(tmp_path: Path, busybox_tar: Path) -> None:
    """docker-py's exec, archive, stats, top, volumes and prune against the daemon."""
    import io
    import tarfile

    import docker

    def work(client: docker.DockerClient) -> None:
        volume = client.volumes.create("pydata", labels={"k": "v"})
        box = client.containers.run(
            "busybox", ["sleep", "100"], detach=True, name="pybox",
            volumes={"pydata": {"bind": "/data", "mode": "rw"}},
        )  # fmt: skip
        result = box.exec_run(["sh", "-c", "echo hi > /data/f; cat /data/f; exit 3"])
        assert (result.exit_code, result.output) == (3, b"hi\n")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            info = tarfile.TarInfo("put.txt")
            info.size = 4
            archive.addfile(info, io.BytesIO(b"put\n"))
        assert box.put_archive("/tmp", buffer.getvalue()) is True
        chunks, stat = box.get_archive("/tmp/put.txt")
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
            member = archive.extractfile("put.txt")
            assert member is not None and member.read() == b"put\n"
        assert stat["name"] == "put.txt" and stat["size"] == 4
        stats = box.stats(stream=False)
        assert stats["id"] == box.id and stats["memory_stats"]["usage"] > 0
        assert stats["precpu_stats"]["cpu_usage"]["total_usage"] > 0  # two samples
        top = box.top()
        assert "PID" in top["Titles"] and any("sleep" in row[-1] for row in top["Processes"])
        assert [v.name for v in client.volumes.list(filters={"label": "k=v"})] == ["pydata"]
        box.remove(force=True)
        done = client.containers.run("busybox", ["true"], name="pydone", detach=True)
        assert done.wait() == {"StatusCode": 0}
        assert client.containers.prune()["ContainersDeleted"] == [done.id]
        volume.remove()
        assert client.volumes.list() == []
        assert client.images.prune()["ImagesDeleted"] is None  # busybox has no dangling twin

    await _with_docker_py(tmp_path, busybox_tar, work)


async def test_aiodocker_everyday_api(tmp_path: Path, busybox_tar: Path) -> None:
    """aiodocker's exec, archive, stats, top, volumes and prune (aiodocker runs on asyncio
    only: in a worker thread's own loop, whichever loop the test has)."""
    import asyncio
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("put.txt")
        info.size = 4
        archive.addfile(info, io.BytesIO(b"put\n"))

    async def work(sock: Path) -> None:
        import aiodocker

        docker = aiodocker.Docker(url=f"unix://{sock}")
        try:
            await docker.volumes.create({"Name": "aiodata"})
            config = {"Image": "busybox", "Cmd": ["sleep", "100"],
                      "HostConfig": {"Binds": ["aiodata:/data"]}}  # fmt: skip
            box = await docker.containers.run(config, name="aiobox")
            execution = await box.exec(["sh", "-c", "echo out; echo err >&2"])
            got = []
            async with execution.start(detach=False) as stream:
                while (message := await stream.read_out()) is not None:
                    got.append((message.stream, message.data))
            assert sorted(got) == [(1, b"out\n"), (2, b"err\n")]
            assert (await execution.inspect())["ExitCode"] == 0
            await box.put_archive("/data", buffer.getvalue())
            archive = await box.get_archive("/data/put.txt")
            member = archive.extractfile("put.txt")
            assert member is not None and member.read() == b"put\n"
            [stats] = await box.stats(stream=False)
            assert stats["memory_stats"]["usage"] > 0 and stats["pids_stats"]["current"] == 1
            top = await box.top()
            assert any("sleep" in row[-1] for row in top["Processes"])
            listed = await docker.volumes.list()
            assert [v["Name"] for v in listed["Volumes"]] == ["aiodata"]
            await box.delete(force=True)
            done = await docker.containers.run({"Image": "busybox", "Cmd": ["true"]}, name="aio2")
            assert (await done.wait())["StatusCode"] == 0
            pruned = await docker.containers.prune()
            assert pruned["ContainersDeleted"] == [done.id]
            await (await docker.volumes.get("aiodata")).delete()
        finally:
            await docker.close()

    async with served(tmp_path, busybox_tar) as cli:
        with anyio.fail_after(60):
            await anyio.to_thread.run_sync(asyncio.run, work(cli.sock))
