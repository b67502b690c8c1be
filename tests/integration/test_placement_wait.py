"""`placement_timeout_s` bounds placement, not start-up: an actor Ray has placed whose constructor
is still running when the timeout runs out (the trainer importing torch on a loaded machine) is
awaited, while one no node can take fails in one line. On a real local Ray; the constructor is
held on a file the test writes, so the order of events does not depend on the machine's speed."""

import threading
import time
from pathlib import Path

import pytest

from shared.errors import UserError

pytestmark = pytest.mark.integration


class HeldUntil:
    """An actor whose constructor writes `<folder>/started`, then waits for `<folder>/release`."""

    def __init__(self, folder: str):
        (Path(folder) / "started").touch()
        while not (Path(folder) / "release").exists():
            time.sleep(0.05)


def wait_for(path: Path, within_s: float = 120.0) -> None:
    deadline = time.monotonic() + within_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} did not appear"
        time.sleep(0.05)


def test_a_placed_actor_still_constructing_is_awaited_past_the_timeout(local_ray, tmp_path):
    from deploy.placement_checks import PlacedActor, wait_until_placed

    release = tmp_path / "release"
    actor = local_ray.remote(HeldUntil).options(num_cpus=0.5).remote(str(tmp_path))
    try:
        wait_for(tmp_path / "started")  # placed, its constructor waiting for `release`
        threading.Timer(2.0, release.touch).start()  # well after the 0.5 s timeout below
        started = time.monotonic()
        (answer,) = wait_until_placed([PlacedActor(actor, "the held actor", {"CPU": 0.5})], timeout_s=0.5)
        assert time.monotonic() - started >= 1.5  # it waited out the constructor, past the timeout
        assert answer["node_id"] == local_ray.get_runtime_context().get_node_id()
    finally:
        release.touch()
        local_ray.kill(actor)


def test_an_actor_no_node_can_take_fails_in_one_line_after_the_timeout(local_ray, tmp_path):
    from deploy.placement_checks import PlacedActor, wait_until_placed

    actor = local_ray.remote(HeldUntil).options(num_cpus=0.5, resources={"accel": 1}).remote(str(tmp_path))
    try:
        with pytest.raises(UserError) as raised:
            wait_until_placed([PlacedActor(actor, "the greedy actor", {"CPU": 0.5, "accel": 1})], timeout_s=1)
        assert str(raised.value).startswith(
            "the greedy actor was not placed within 1 s (placement_timeout_s): it asks for CPU 0.5, accel 1"
        )
    finally:
        local_ray.kill(actor)
