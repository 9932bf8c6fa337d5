"""Signal names and numbers as the Docker API takes them (``docker kill -s``, ``StopSignal``)."""

from __future__ import annotations

import signal

import pytest

from asyncstart import errors
from asyncstart.signals import parse_signal


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("KILL", signal.SIGKILL),
        ("SIGKILL", signal.SIGKILL),
        ("kill", signal.SIGKILL),
        ("sigterm", signal.SIGTERM),
        ("Term", signal.SIGTERM),
        ("SIGHUP", signal.SIGHUP),
        ("usr1", signal.SIGUSR1),
        ("WINCH", signal.SIGWINCH),
        ("SIGRTMIN", signal.SIGRTMIN),
        ("RTMAX", signal.SIGRTMAX),
        ("IOT", signal.SIGABRT),  # an alias names the same signal
    ],
)
def test_names_with_or_without_sig_in_any_case(value: str, number: int) -> None:
    assert parse_signal(value) == number


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("9", 9),
        ("15", 15),
        ("1", 1),
        (str(signal.NSIG - 1), signal.NSIG - 1),  # the highest real-time signal
        (9, 9),
        (signal.SIGTERM, signal.SIGTERM),
    ],
)
def test_numbers_as_text_or_int(value: str | int, number: int) -> None:
    assert parse_signal(value) == number


def test_no_signal_is_the_default() -> None:
    assert parse_signal(None) == signal.SIGKILL
    assert parse_signal("") == signal.SIGKILL
    assert parse_signal(None, default=signal.SIGTERM) == signal.SIGTERM
    assert parse_signal("", default=signal.SIGINT) == signal.SIGINT
    # A default is only for an absent signal.
    assert parse_signal("HUP", default=signal.SIGTERM) == signal.SIGHUP


@pytest.mark.parametrize(
    "value",
    [
        "SIGNOPE",
        "nope",
        "SIG",
        "SIGSIGKILL",
        "KILL9",
        "-9",
        "9.0",
        " 9",
        "0",
        "00",
        str(signal.NSIG),
        "1000",
        0,
        -1,
        signal.NSIG,
    ],
)
def test_a_bad_signal_is_a_400_naming_it_as_given(value: str | int) -> None:
    with pytest.raises(errors.InvalidParameter) as caught:
        parse_signal(value)
    assert caught.value.status == 400
    assert str(caught.value) == f"Invalid signal: {value}"


def test_real_time_signals_by_offset() -> None:
    assert parse_signal("RTMIN+3") == signal.SIGRTMIN + 3
    assert parse_signal("SIGRTMAX-1") == signal.SIGRTMAX - 1
