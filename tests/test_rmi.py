"""dockerd's ``docker rmi`` policy, decided without an image store: every branch, its message."""

from __future__ import annotations

import pytest

from asyncstart import errors
from asyncstart.rmi import ContainerUse, RemovalPlan, plan_removal, policy

IMAGE = "sha256:" + "0123456789ab" + "c" * 52
SHORT = "0123456789ab"
RUNNING: ContainerUse = ("a" * 64, True)
STOPPED: ContainerUse = ("b" * 64, False)


def _conflict(
    reference: str, tags: list[str], users: list[ContainerUse], force: bool = False
) -> str:
    with pytest.raises(errors.Conflict) as info:
        plan_removal(reference, IMAGE, tags, users, force=force)
    assert info.value.status == 409
    return str(info.value)


@pytest.mark.parametrize("users", [[], [RUNNING], [STOPPED]])
@pytest.mark.parametrize("force", [False, True])
def test_one_name_of_several_is_only_untagged(users: list[ContainerUse], force: bool) -> None:
    plan = plan_removal("app:2", IMAGE, ["app:1", "app:2"], users, force=force)
    assert plan == RemovalPlan(untag=("app:2",), delete=False)


def test_docker_hubs_long_form_names_the_same_tag() -> None:
    plan = plan_removal("docker.io/library/app", IMAGE, ["app:latest", "b:1"], [])
    assert plan == RemovalPlan(untag=("app:latest",))


def test_by_id_an_image_with_several_names_must_be_forced() -> None:
    assert _conflict(SHORT, ["app:1", "app:2"], []) == (
        f"conflict: unable to delete {SHORT} (must be forced) - image is referenced in multiple"
        " repositories"
    )


def test_forced_by_id_an_image_with_several_names_is_deleted() -> None:
    plan = plan_removal(SHORT, IMAGE, ["app:1", "app:2"], [], force=True)
    assert plan == RemovalPlan(untag=("app:1", "app:2"), delete=True)


@pytest.mark.parametrize("reference", ["app:1", SHORT])
def test_forced_with_a_running_user_untags_and_keeps(reference: str) -> None:
    plan = plan_removal(reference, IMAGE, ["app:1"], [STOPPED, RUNNING], force=True)
    assert plan == RemovalPlan(untag=("app:1",), delete=False)


def test_forced_by_id_with_several_names_and_a_running_user_untags_all() -> None:
    plan = plan_removal(SHORT, IMAGE, ["app:1", "app:2"], [RUNNING], force=True)
    assert plan == RemovalPlan(untag=("app:1", "app:2"), delete=False)


@pytest.mark.parametrize(("tags", "force"), [(["app:1"], False), ([], False), ([], True)])
def test_a_running_user_refuses(tags: list[str], force: bool) -> None:
    # The first running container is named, whatever stopped ones come before it.
    message = _conflict("app:1" if tags else SHORT, tags, [STOPPED, RUNNING], force)
    assert message == (
        f"conflict: unable to delete {SHORT} (cannot be forced) - image is being used by running"
        f" container {'a' * 12}"
    )


@pytest.mark.parametrize("reference", ["app:1", SHORT])
def test_a_stopped_user_needs_force(reference: str) -> None:
    tags = ["app:1"] if reference == "app:1" else []
    message = _conflict(reference, tags, [STOPPED, ("c" * 64, False)])
    assert message == (
        f'conflict: unable to remove repository reference "{reference}" (must force) - container'
        f" {'b' * 12} is using its referenced image {SHORT}"
    )


@pytest.mark.parametrize(
    ("reference", "tags"), [("app:1", ["app:1"]), (SHORT, []), (SHORT, ["x:1"])]
)
def test_forced_with_stopped_users_untags_and_keeps(reference: str, tags: list[str]) -> None:
    plan = plan_removal(reference, IMAGE, tags, [STOPPED], force=True)
    assert plan == RemovalPlan(untag=tuple(tags), delete=False)


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize(
    ("reference", "tags"), [("app:1", ["app:1"]), (SHORT, []), (SHORT, ["x:1"])]
)
def test_an_unused_image_is_untagged_and_deleted(
    reference: str, tags: list[str], force: bool
) -> None:
    plan = plan_removal(reference, IMAGE, tags, [], force=force)
    assert plan == RemovalPlan(untag=tuple(tags), delete=True)


def test_policy_looks_up_the_users_of_the_image_it_is_given() -> None:
    other = "sha256:" + "f" * 64
    decide = policy("app:1", {other: [RUNNING], IMAGE: [STOPPED]})
    with pytest.raises(errors.Conflict, match="is using its referenced image"):
        decide(IMAGE, ["app:1"])
    with pytest.raises(errors.Conflict, match="being used by running container"):
        decide(other, ["app:1"])
    assert policy("app:1", {other: [RUNNING]})(IMAGE, ["app:1"]) == RemovalPlan(
        untag=("app:1",), delete=True
    )
    assert policy("app:1", {IMAGE: [STOPPED]}, force=True)(IMAGE, ["app:1"]) == RemovalPlan(
        untag=("app:1",)
    )
