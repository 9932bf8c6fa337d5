"""Random IDs: hex of the asked length, never repeated, and a forked child's are its own."""

from __future__ import annotations

import os

from asyncstart.ids import random_hex


def test_ids_are_hex_of_the_asked_length_and_never_repeat() -> None:
    ids = [random_hex(32) for _ in range(1000)]  # (several pages of the buffer)
    assert all(len(i) == 64 and int(i, 16) >= 0 for i in ids)
    assert len(set(ids)) == len(ids)
    assert len(random_hex(5000)) == 10000  # (more than a page at once)


def test_a_forked_child_does_not_hand_out_its_parents_next_ids() -> None:
    random_hex(4)  # the buffer holds bytes the parent will hand out next
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ID, to the parent
        os.close(read)
        os.write(write, random_hex(32).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    assert len(child) == 64
    assert child != random_hex(32)
