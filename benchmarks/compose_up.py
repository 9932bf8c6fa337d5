#!/usr/bin/env python3
"""docker-compose (1.29) ``up -d`` and ``down`` wall time of a two-service project (one
service fetches from the other by its service name, on the project's own network), against
an ``asyncstart daemon`` process and, given ``--dockerd SOCKET``, a dockerd on that socket in
the same run (alternating, so that both see the same machine).

The busybox test image is imported into each engine (``docker import``). Names the
containers do not know are sent to 127.0.0.1 (``dns:``), which nothing serves in their
namespace: no query leaves the machine. Needs root, runc, docker-compose and the docker CLI.

    sudo .venv/bin/python benchmarks/compose_up.py --runs 10 [--dockerd unix:///run/d.sock]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import host_as_found, summary_ms

from asyncstart.images.busybox import build_busybox_tar

COMPOSE = """\
version: "3"
services:
  web:
    image: busybox
    command: ["sh", "-c", "echo hi > /tmp/index.html && exec httpd -f -p 80 -h /tmp"]
    stop_signal: SIGKILL  # (httpd as pid 1 ignores SIGTERM)
    dns: [127.0.0.1]
  fetch:
    image: busybox
    command: ["sh", "-c", "for i in $$(seq 100); do
      wget -q -O - http://web/index.html && exit 0; sleep 0.05; done; exit 1"]
    dns: [127.0.0.1]
"""


def _run(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    result = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.stderr}")
    return result.stdout


def _timed_cycle(host: str, project: Path) -> tuple[float, float]:
    """One ``up -d`` (until it returns), the fetch's exit checked, one ``down``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env |= {"DOCKER_HOST": host, "DOCKER_CONFIG": str(project / "cfg")}
    compose = ["docker-compose", "-p", "bench"]
    began = time.perf_counter()
    _run([*compose, "up", "-d"], env, project)
    up = time.perf_counter() - began
    code = _run(["docker", "wait", "bench_fetch_1"], env).strip()
    if code != "0":
        raise SystemExit(f"the fetch failed on {host}: exit {code}")
    began = time.perf_counter()
    _run([*compose, "down"], env, project)
    return up, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--dockerd", default="", help="a dockerd socket to compare with")
    args = parser.parse_args()
    with host_as_found(), tempfile.TemporaryDirectory(prefix="asyncstart-compose-bench-") as tmp:
        root = Path(tmp)
        project = root / "proj"
        (project / "cfg").mkdir(parents=True)
        (project / "docker-compose.yml").write_text(COMPOSE)
        tar = build_busybox_tar(root / "busybox.tar")
        sock = root / "s.sock"
        daemon = subprocess.Popen(
            [sys.executable, "-m", "asyncstart", "daemon", "--data-root", str(root / "d"),
             "--exec-root", str(root / "x"), "-H", f"unix://{sock}", "--log-level", "warning"],
        )  # fmt: skip
        try:
            for _ in range(100):
                if sock.exists():
                    break
                time.sleep(0.05)
            engines = {"asyncstart": f"unix://{sock}"}
            if args.dockerd:
                engines["dockerd"] = args.dockerd
            env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
            for host in engines.values():
                _run(["docker", "-H", host, "import", str(tar), "busybox:latest"], env)
            ups: dict[str, list[float]] = {name: [] for name in engines}
            downs: dict[str, list[float]] = {name: [] for name in engines}
            for _ in range(args.runs):
                for name, host in engines.items():
                    up, down = _timed_cycle(host, project)
                    ups[name].append(up)
                    downs[name].append(down)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
    for name in engines:
        print(f"compose_up {name:10} up -d: {summary_ms(ups[name])}")
        print(f"compose_up {name:10} down:  {summary_ms(downs[name])}")


if __name__ == "__main__":
    main()
