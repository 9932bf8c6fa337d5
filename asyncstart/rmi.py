"""dockerd's ``docker rmi`` policy: which names go, whether the image goes, when to refuse.

Pure: it decides from the image's ID and names and the containers that use it, and the image
store applies the decision under its lock (:meth:`ImageStore.remove`). The rules are about
containers, so they live beside the daemon rather than in the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from . import errors
from .images.store import RemovalPlan, RemovalPolicy, parse_reference

__all__ = ["ContainerUse", "RemovalPlan", "plan_removal", "policy", "users_by_image"]

#: A container that uses an image: its ID and whether its process lives (dockerd's "running").
ContainerUse = tuple[str, bool]


def plan_removal(
    reference: str,
    image_id: str,
    tags: Sequence[str],
    users: Sequence[ContainerUse],
    *,
    force: bool = False,
) -> RemovalPlan:
    """What ``docker rmi [--force] reference`` does to the image ``image_id``, whose names are
    ``tags`` (sorted) and which ``users`` use; raises :class:`errors.Conflict` (409) to refuse.

    - One name of an image with several is only untagged, even while a container runs it.
    - By ID, an image with several names needs ``force``.
    - A running container's image: with ``force`` its names are untagged and it is kept;
      without, or when it has no name, the removal is refused.
    - A stopped container's image needs ``force``, and is then untagged and kept.
    - An image no container uses loses its names and is deleted.
    """
    short = image_id[7:19]
    name, tag = parse_reference(reference)
    named = f"{name}:{tag}"
    by_name = named in tags
    if by_name and len(tags) > 1:
        return RemovalPlan(untag=(named,))
    if not by_name and len(tags) > 1 and not force:
        raise errors.Conflict(
            f"conflict: unable to delete {short} (must be forced) - image is referenced"
            " in multiple repositories"
        )
    running = [container_id for container_id, live in users if live]
    if running and force and tags:
        return RemovalPlan(untag=tuple(tags))
    if running:
        raise errors.Conflict(
            f"conflict: unable to delete {short} (cannot be forced) - image is being used"
            f" by running container {running[0][:12]}"
        )
    if users and not force:
        raise errors.Conflict(
            f'conflict: unable to remove repository reference "{reference}" (must force)'
            f" - container {users[0][0][:12]} is using its referenced image {short}"
        )
    # Still used by stopped containers (forced): kept, so that they can start again.
    return RemovalPlan(untag=tuple(tags), delete=not users)


def users_by_image(uses: Iterable[tuple[str, str, bool]]) -> dict[str, list[ContainerUse]]:
    """``(image ID, container ID, running)`` of every container, grouped by image ID."""
    users: dict[str, list[ContainerUse]] = {}
    for image_id, container_id, running in uses:
        users.setdefault(image_id, []).append((container_id, running))
    return users


def policy(
    reference: str,
    users: Mapping[str, Sequence[ContainerUse]],
    *,
    force: bool = False,
) -> RemovalPolicy:
    """The policy :meth:`ImageStore.remove` takes for ``docker rmi [--force] reference``.

    ``users`` maps image IDs to the containers using each: the store resolves ``reference``
    under its lock, so the image is known only when the policy is called.
    """

    def decide(image_id: str, tags: list[str]) -> RemovalPlan:
        return plan_removal(reference, image_id, tags, users.get(image_id, ()), force=force)

    return decide
