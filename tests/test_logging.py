"""The engine is silent unless the program asks: each case in a fresh interpreter (structlog's
and logging's configuration are process-wide)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

_RUN = """
import anyio, asyncstart
async def main(root):
    config = asyncstart.DaemonConfig(data_root=f"{root}/d", exec_root=f"{root}/x", runtime="fake")
    async with asyncstart.open_daemon(config) as daemon:
        cid = await daemon.container_create("web", {"Image": "busybox", "Cmd": ["true"]})
        await daemon.container_start(cid)
anyio.run(main, ROOT)
"""


def _run(tmp_path: Path, preamble: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(preamble) + _RUN.replace("ROOT", repr(str(tmp_path)))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip


def test_an_unconfigured_program_hears_nothing(tmp_path: Path) -> None:
    result = _run(tmp_path, "")
    assert (result.stdout, result.stderr) == ("", "")


def test_the_standard_logging_module_governs_the_asyncstart_loggers(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        """
        import logging, sys
        logging.basicConfig(stream=sys.stdout, format="%(name)s %(message)s")
        logging.getLogger("asyncstart").setLevel(logging.DEBUG)
        logging.getLogger("asyncstart.saga").setLevel(logging.WARNING)
    """,
    )
    assert "asyncstart.daemon event='daemon.ready'" in result.stdout
    assert "phase.complete" not in result.stdout  # (asyncstart.saga held at warning)


def test_a_structlog_program_keeps_its_processors(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        """
        import structlog
        def mark(logger, method, event):
            print("MINE", method, event["event"])
            raise structlog.DropEvent
        structlog.configure(processors=[mark])
    """,
    )
    assert "MINE info daemon.ready" in result.stdout
    assert "MINE debug phase.complete" in result.stdout


def test_the_entry_points_lines_read_key_by_key(tmp_path: Path) -> None:
    """``configure_logging``'s one-step renderer: the stamp, the level, the event, then the
    event's keys in the order given, each ``key=repr(value)``; a logged exception's
    traceback rendered, not ``exc_info=True``."""
    result = _run(
        tmp_path,
        """
        import sys
        from asyncstart._log import get_logger
        from asyncstart.logconfig import configure_logging
        configure_logging("info", sys.stdout)
        log = get_logger("asyncstart.test")
        log.info("first.event", b="two", a=1, c=None)
        log.debug("hidden.event")
        try:
            raise ValueError("the cause")
        except ValueError:
            log.exception("failed.event", container_id="c")
    """,
    )
    lines = result.stdout.splitlines()
    first, failed = lines[0], next(line for line in lines if "failed.event" in line)
    assert re.fullmatch(
        r"timestamp='\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z' level='info' "
        r"event='first.event' b='two' a=1 c=None",
        first,
    ), first
    assert "hidden.event" not in result.stdout
    assert "level='error' event='failed.event' container_id='c' exception='Traceback" in failed
    assert "ValueError: the cause" in failed and "exc_info" not in failed
    assert "event='daemon.ready'" in result.stdout  # (the engine's own, through the same)
