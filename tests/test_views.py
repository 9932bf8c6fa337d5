"""How a container is shown: the inspect document and the ``ps`` row, from a record and a
lifecycle built by hand (no daemon), and the time helpers they use."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncstart.config import parse_config, parse_host_config
from asyncstart.lifecycle import Lifecycle, State
from asyncstart.record import ContainerRecord
from asyncstart.views import format_time, human_duration, inspect_view, list_view, parse_time

CID = "c0ffee" + "12" * 29
IMAGE_ID = "sha256:" + "ab" * 32
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
#: Go's zero ``time.Time`` as dockerd prints it: a time that never happened.
GO_ZERO_TIME = "0001-01-01T00:00:00Z"

MINUTE = 60.0
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def make_record(**fields: Any) -> ContainerRecord:
    config = {"Image": "busybox:1.36", "Cmd": ["sleep", "infinity"], "Labels": {"tier": "web"}}
    config.update(fields.pop("config", {}))
    host = {"NetworkMode": "bridge", "RestartPolicy": {"Name": "always"}}
    host.update(fields.pop("host_config", {}))
    values: dict[str, Any] = {
        "id": CID,
        "name": "/web",
        "created": format_time(NOW - DAY),
        "image": IMAGE_ID,
        "config": parse_config(config),
        "host_config": parse_host_config(host),
    }
    values.update(fields)
    return ContainerRecord(**values)


def at(state: State, *, ran_before: bool = True, via_restart: bool = False) -> Lifecycle:
    return Lifecycle(CID, state=state, ran_before=ran_before, via_restart=via_restart)


def test_a_new_record_has_never_started_or_finished() -> None:
    record = make_record()
    assert (record.started_at, record.finished_at) == (GO_ZERO_TIME, GO_ZERO_TIME)
    assert parse_time(record.started_at) == 0.0


# -- inspect: State -------------------------------------------------------------------------

# (state, ran_before, via_restart) -> Status, Running, Paused, Restarting, Dead: dockerd's
# State, where a paused or restarting container counts as running too.
STATES = [
    ((State.CREATED, False, False), ("created", False, False, False, False)),
    ((State.RUNNING, True, False), ("running", True, False, False, False)),
    ((State.PAUSED, True, False), ("paused", True, True, False, False)),
    ((State.STOPPING, True, False), ("running", True, False, False, False)),
    ((State.EXITED, True, False), ("exited", False, False, False, False)),
    ((State.RESTARTING, True, False), ("restarting", True, False, True, False)),
    ((State.REMOVING, True, False), ("removing", False, False, False, False)),
    ((State.DEAD, True, False), ("dead", False, False, False, True)),
    # Inside the start saga a container shows as it was before the start...
    ((State.MOUNTING, False, False), ("created", False, False, False, False)),
    ((State.NETWORKING, True, False), ("exited", False, False, False, False)),
    ((State.SPEC_READY, True, False), ("exited", False, False, False, False)),
    # ... or as restarting while a policy restart runs it.
    ((State.MOUNTING, True, True), ("restarting", True, False, True, False)),
    ((State.SPEC_READY, True, True), ("restarting", True, False, True, False)),
]


@pytest.mark.parametrize(
    ("position", "expected"), STATES, ids=[f"{s[0][0].value}-{i}" for i, s in enumerate(STATES)]
)
def test_state_flags(
    position: tuple[State, bool, bool], expected: tuple[str, bool, bool, bool, bool]
) -> None:
    state, ran_before, via_restart = position
    view = inspect_view(make_record(), at(state, ran_before=ran_before, via_restart=via_restart))
    shown = view["State"]
    assert (
        shown["Status"],
        shown["Running"],
        shown["Paused"],
        shown["Restarting"],
        shown["Dead"],
    ) == expected


def test_state_facts_come_from_the_record() -> None:
    started, finished = format_time(NOW - HOUR), format_time(NOW - MINUTE)
    record = make_record(
        pid=4321,
        exit_code=137,
        error="oom",
        oom_killed=True,
        started_at=started,
        finished_at=finished,
    )
    state = inspect_view(record, at(State.EXITED))["State"]
    assert state["Pid"] == 4321 and state["ExitCode"] == 137 and state["Error"] == "oom"
    assert state["OOMKilled"] is True
    assert (state["StartedAt"], state["FinishedAt"]) == (started, finished)


# -- inspect: the rest -----------------------------------------------------------------------


def test_inspect_document() -> None:
    record = make_record(
        config={"Entrypoint": ["/init", "--"], "Cmd": ["serve", "-v"]},
        host_config={"Memory": 1024},
        restart_count=3,
    )
    view = inspect_view(record, at(State.RUNNING))
    assert view["Id"] == CID and view["Name"] == "/web"
    assert view["Created"] == record.created
    assert view["Path"] == "/init" and view["Args"] == ["--", "serve", "-v"]
    assert view["Image"] == IMAGE_ID
    assert view["RestartCount"] == 3
    # Config and HostConfig in Docker's wire names.
    assert view["Config"]["Cmd"] == ["serve", "-v"]
    assert view["Config"]["Entrypoint"] == ["/init", "--"]
    assert view["Config"]["Image"] == "busybox:1.36"
    assert view["Config"]["Labels"] == {"tier": "web"}
    assert view["HostConfig"]["Memory"] == 1024
    assert view["HostConfig"]["RestartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}
    assert view["HostConfig"]["NetworkMode"] == "bridge"


def test_inspect_of_a_container_without_a_command() -> None:
    record = make_record(config={"Cmd": None})
    view = inspect_view(record, at(State.CREATED, ran_before=False))
    assert (view["Path"], view["Args"]) == ("", [])


def test_inspect_network_settings() -> None:
    ports = {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}
    networks = {"bridge": {"IPAddress": "10.213.0.5"}}
    record = make_record(
        network_settings={
            "SandboxKey": "/run/netns/x",
            "IPAddress": "10.213.0.5",
            "IPPrefixLen": 24,
            "Gateway": "10.213.0.1",
            "MacAddress": "02:42:0a:d5:00:05",
            "Ports": ports,
            "Networks": networks,
            "HostnamePath": "/data/c/hostname",
            "HostsPath": "/data/c/hosts",
            "ResolvConfPath": "/data/c/resolv.conf",
        }
    )
    view = inspect_view(record, at(State.RUNNING))
    settings = view["NetworkSettings"]
    assert settings["SandboxKey"] == "/run/netns/x"
    assert (settings["IPAddress"], settings["IPPrefixLen"]) == ("10.213.0.5", 24)
    assert settings["Gateway"] == "10.213.0.1"
    assert settings["MacAddress"] == "02:42:0a:d5:00:05"
    assert settings["Ports"] == ports and settings["Networks"] == networks
    assert view["HostnamePath"] == "/data/c/hostname"
    assert view["HostsPath"] == "/data/c/hosts"
    assert view["ResolvConfPath"] == "/data/c/resolv.conf"


def test_inspect_without_a_network() -> None:
    view = inspect_view(make_record(), at(State.CREATED, ran_before=False))
    settings = view["NetworkSettings"]
    assert settings["IPAddress"] == "" and settings["IPPrefixLen"] == 0
    assert settings["Ports"] == {}
    # As dockerd: the network it will join, without an address until it runs.
    assert list(settings["Networks"]) == ["bridge"]
    assert settings["Networks"]["bridge"]["IPAddress"] == ""
    assert view["ResolvConfPath"] == view["HostnamePath"] == view["HostsPath"] == ""


def test_editing_an_inspect_document_leaves_the_record_alone() -> None:
    record = make_record(
        network_settings={
            "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]},
            "Networks": {"bridge": {}},
        }
    )
    view = inspect_view(record, at(State.RUNNING))
    view["NetworkSettings"]["Ports"]["443/tcp"] = []
    view["NetworkSettings"]["Networks"].clear()
    assert set(record.network_settings["Ports"]) == {"80/tcp"}
    assert record.network_settings["Networks"] == {"bridge": {}}


# -- ps -------------------------------------------------------------------------------------


def test_ps_row() -> None:
    record = make_record(config={"Entrypoint": ["/init"], "Cmd": ["serve", "--port", "80"]})
    row = list_view(record, at(State.RUNNING), NOW)
    assert row["Id"] == CID
    assert row["Names"] == ["/web"]
    # The image as the container was created with it; the resolved ID beside it.
    assert (row["Image"], row["ImageID"]) == ("busybox:1.36", IMAGE_ID)
    assert row["Command"] == "/init serve --port 80"
    assert row["Created"] == int(NOW - DAY)
    assert row["Labels"] == {"tier": "web"}
    assert row["State"] == "running"
    assert row["HostConfig"] == {"NetworkMode": "bridge"}
    assert list(row["NetworkSettings"]["Networks"]) == ["bridge"]
    assert row["Ports"] == []


def test_ps_image_without_a_resolved_id() -> None:
    # The fake runtime runs images the store has never seen: no ID to show.
    row = list_view(make_record(image="busybox"), at(State.CREATED, ran_before=False), NOW)
    assert (row["Image"], row["ImageID"]) == ("busybox:1.36", "")
    nameless = make_record(config={"Image": ""})
    assert list_view(nameless, at(State.CREATED, ran_before=False), NOW)["Image"] == IMAGE_ID


def test_ps_labels_are_a_copy() -> None:
    record = make_record()
    row = list_view(record, at(State.RUNNING), NOW)
    row["Labels"]["tier"] = "changed"
    assert record.config.labels == {"tier": "web"}


def test_ps_port_rows() -> None:
    record = make_record(
        network_settings={
            "IPAddress": "10.213.0.5",
            "Ports": {
                "80/tcp": [
                    {"HostIp": "0.0.0.0", "HostPort": "8080"},
                    {"HostIp": "127.0.0.1", "HostPort": "9090"},
                ],
                "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}],
            },
        }
    )
    rows = list_view(record, at(State.RUNNING), NOW)["Ports"]
    assert sorted(rows, key=lambda r: (r["PrivatePort"], r["PublicPort"])) == [
        {"IP": "0.0.0.0", "PrivatePort": 53, "PublicPort": 5353, "Type": "udp"},
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
        {"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": 9090, "Type": "tcp"},
    ]


def _status(lifecycle: Lifecycle, **fields: Any) -> str:
    text: str = list_view(make_record(**fields), lifecycle, NOW)["Status"]
    return text


def test_ps_status_up_and_paused() -> None:
    started = format_time(NOW - 5 * MINUTE)
    assert _status(at(State.RUNNING), started_at=started) == "Up 5 minutes"
    assert _status(at(State.STOPPING), started_at=started) == "Up 5 minutes"
    assert _status(at(State.PAUSED), started_at=started) == "Up 5 minutes (Paused)"
    long_ago = format_time(NOW - 3 * DAY)
    assert _status(at(State.RUNNING), started_at=long_ago) == "Up 3 days"


def test_ps_status_exited() -> None:
    fields = {"started_at": format_time(NOW - DAY), "exit_code": 137}
    finished = format_time(NOW - 2 * HOUR)
    assert _status(at(State.EXITED), finished_at=finished, **fields) == "Exited (137) 2 hours ago"
    just_now = format_time(NOW - 0.2)
    assert _status(at(State.EXITED), finished_at=just_now, started_at=fields["started_at"]) == (
        "Exited (0) Less than a second ago"
    )
    # A start under way shows as exited too, with the last run's code.
    assert _status(at(State.MOUNTING), finished_at=finished, **fields) == (
        "Exited (137) 2 hours ago"
    )


def test_ps_status_created_restarting_removing_dead() -> None:
    assert _status(at(State.CREATED, ran_before=False)) == "Created"
    # A start that failed before any run: still "Created".
    assert _status(at(State.CREATED, ran_before=False), exit_code=127) == "Created"
    restarting = {
        "exit_code": 3,
        "started_at": format_time(NOW - 10),
        "finished_at": format_time(NOW - 3),
    }
    assert _status(at(State.RESTARTING), **restarting) == "Restarting (3) 3 seconds ago"
    assert _status(at(State.SPEC_READY, via_restart=True), **restarting) == (
        "Restarting (3) 3 seconds ago"
    )
    assert _status(at(State.REMOVING)) == "Removal In Progress"
    assert _status(at(State.DEAD), started_at=format_time(NOW - DAY)) == "Dead"


def test_ps_status_of_a_run_that_never_finished() -> None:
    # dockerd's State.String: started but no finish time and not running shows nothing.
    assert _status(at(State.EXITED), started_at=format_time(NOW - HOUR)) == ""


# -- time -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "text"),
    [
        (0.0, "1970-01-01T00:00:00Z"),
        (NOW, "2023-11-14T22:13:20Z"),
        (NOW + 0.5, "2023-11-14T22:13:20.5Z"),
        (NOW + 0.25, "2023-11-14T22:13:20.25Z"),  # trailing zeros trimmed, as Go's RFC3339Nano
        (1.000001, "1970-01-01T00:00:01.000001Z"),
    ],
)
def test_format_time_is_rfc3339nano_in_utc(timestamp: float, text: str) -> None:
    assert format_time(timestamp) == text
    assert parse_time(text) == pytest.approx(timestamp, abs=1e-6)


@pytest.mark.parametrize("timestamp", [1.0, 1234.125, NOW + 0.123456, NOW + 86_399.999999])
def test_parse_time_inverts_format_time(timestamp: float) -> None:
    assert parse_time(format_time(timestamp)) == pytest.approx(timestamp, abs=1e-6)


def test_parse_time_of_the_zero_time_and_of_nanoseconds() -> None:
    assert parse_time(GO_ZERO_TIME) == 0.0
    # dockerd writes nanoseconds; microseconds are kept.
    assert parse_time("2023-11-14T22:13:20.123456789Z") == pytest.approx(NOW + 0.123456, abs=1e-6)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "Less than a second"),
        (0.999, "Less than a second"),
        (1.0, "1 second"),
        (1.9, "1 second"),
        (2.0, "2 seconds"),
        (59.9, "59 seconds"),
        (MINUTE, "About a minute"),
        (2 * MINUTE - 1, "About a minute"),
        (2 * MINUTE, "2 minutes"),
        (59 * MINUTE + 59, "59 minutes"),
        (HOUR, "About an hour"),
        (89 * MINUTE, "About an hour"),
        (91 * MINUTE, "2 hours"),
        (47 * HOUR, "47 hours"),
        (2 * DAY, "2 days"),
        (13 * DAY, "13 days"),
        (14 * DAY, "2 weeks"),
        (59 * DAY, "8 weeks"),
        (60 * DAY, "2 months"),
        (729 * DAY, "24 months"),
        (730 * DAY, "2 years"),
        (3651 * DAY, "10 years"),
    ],
)
def test_human_duration_as_go_units(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_human_duration_rounds_half_hours_up_as_go_units() -> None:
    assert human_duration(2.5 * HOUR) == "3 hours"
    assert human_duration(4.5 * HOUR) == "5 hours"


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_format_time_reads_as_datetime_has_it(timestamp: float) -> None:
    """Formatted from a cache of seconds, the microseconds rounded as ``datetime`` rounds them
    (half to even), trailing zeros trimmed."""
    moment = _dt.datetime.fromtimestamp(timestamp, _dt.UTC).replace(tzinfo=None)
    expected = moment.isoformat(timespec="microseconds").rstrip("0").rstrip(".") + "Z"
    assert format_time(timestamp) == expected
