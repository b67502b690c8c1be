"""Checks the driver makes while Ray places the run's actors: that each actor was placed within the
run's `placement_timeout_s` (else an error naming what it asked for and what each node offers),
where it landed, and that the trainer sees the run folder the driver reads.

Ray queues an actor whose resources no node has (or no node has free) without an error; a driver
that then waits on the actor's first call waits forever. Every actor the driver places is
therefore awaited here, with a timeout, through Ray's own `__ray_call__` (no method of ours needed).
The timeout bounds placement, not start-up: an actor Ray has given a worker process when the
timeout runs out is placed and still constructing (importing torch takes seconds, many more on a
loaded machine), and is awaited up to STARTUP_GRACE_S more before it is called stuck.
"""

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError

from shared.errors import UserError

STARTUP_GRACE_S = 600.0  # a placed actor's constructor (the trainer loads a model) may take this long


@dataclass(frozen=True)
class PlacedActor:
    """An actor handle, what the user calls it, and the resources it asked Ray for."""

    handle: Any
    what: str  # "the trainer", "rollout replica 0"
    asks: dict[str, float]


def resource_ask(num_cpus: float, num_gpus: float, resources: dict[str, float]) -> dict[str, float]:
    ask = {"CPU": num_cpus, **({"GPU": num_gpus} if num_gpus else {}), **resources}
    return {name: amount for name, amount in ask.items() if amount}


def _node_of(actor: Any, probe: str | None = None) -> dict[str, Any]:
    """Run inside the actor: its node, and whether it sees `probe`."""
    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "sees_probe": bool(probe) and Path(probe).is_file(),
    }


def wait_until_placed(actors: list[PlacedActor], timeout_s: float, probe: str | None = None) -> list[dict]:
    """Each actor's `_node_of` answer, once all are placed; UserError naming the first actor still
    unplaced after `timeout_s` (or one whose constructor failed)."""
    pending = {actor.what: actor.handle.__ray_call__.remote(_node_of, probe) for actor in actors}
    ray.wait(list(pending.values()), num_returns=len(pending), timeout=timeout_s)
    answers = []
    for actor in actors:
        ref = pending[actor.what]
        if not ray.wait([ref], timeout=0)[0]:
            if not has_worker(actor.handle):
                raise UserError(unplaced_message(actor, timeout_s))
            if not ray.wait([ref], timeout=STARTUP_GRACE_S)[0]:  # placed, its constructor still running
                raise UserError(
                    f"{actor.what} was placed but did not start within {STARTUP_GRACE_S:g} s more"
                )
        try:
            answers.append(ray.get(ref))
        except RayActorError as error:
            raise UserError(f"{actor.what} failed to start: {creation_error(error)}") from None
    return answers


def has_worker(handle: Any) -> bool:
    """Whether Ray has leased the actor a worker process on some node (it is placed, perhaps still
    running its constructor), from the cluster's actor table; False where the table cannot say."""
    try:  # a DeveloperAPI, as `_available_by_node`'s
        from ray._private.state import actors

        entry = actors(handle._actor_id.hex())
    except Exception:  # noqa: BLE001 - then only an answered call counts as placed
        return False
    return entry.get("State") == "ALIVE" or bool(entry.get("Pid"))


def unplaced_message(actor: PlacedActor, timeout_s: float) -> str:
    asks = ", ".join(f"{name} {amount:g}" for name, amount in actor.asks.items())
    return (
        f"{actor.what} was not placed within {timeout_s:g} s (placement_timeout_s): it asks for {asks}, and no "
        f"node has that free. Nodes: {describe_nodes()}"
    )


def describe_nodes() -> str:
    """Every alive node's address and its free / total resources (memory and object store left out)."""
    available = _available_by_node()
    parts = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        node_id = node["NodeID"]
        total = {k: v for k, v in node.get("Resources", {}).items() if _shown(k)}
        free = available.get(node_id, {})
        offer = ", ".join(
            f"{name} {free.get(name, 0):g}/{amount:g}" for name, amount in sorted(total.items())
        )
        parts.append(f"{node['NodeManagerAddress']} {node_id[:8]} ({offer or 'nothing'})")
    return "; ".join(parts) or "none alive"


def _shown(resource: str) -> bool:
    return resource not in ("memory", "object_store_memory") and not resource.startswith("node:")


def _available_by_node() -> dict[str, dict[str, float]]:
    try:  # per-node free resources (a DeveloperAPI; ray.available_resources sums over the cluster)
        from ray._private.state import available_resources_per_node

        return {node_id: dict(resources) for node_id, resources in available_resources_per_node().items()}
    except Exception:  # noqa: BLE001 - a description without free amounts is still useful
        return {}


def creation_error(error: Exception) -> str:
    """The last line of the actor's creation traceback that names an error, else the first line."""
    text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = [line for line in lines if "Error: " in line or "Exception: " in line]
    return named[-1] if named else (lines[0] if lines else type(error).__name__)


def run_dir_probe(run_dir: Path) -> Path:
    """A file the driver writes into the run folder for the trainer to find (removed by the caller)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    probe = run_dir / f".placement-probe-{secrets.token_hex(4)}"
    probe.write_text("the driver wrote this; the trainer must see it\n")
    return probe


def unshared_run_dir_message(run_dir: Path, trainer_node: str, driver_node: str) -> str:
    return (
        f"the trainer runs on node {trainer_node[:8]} and cannot see the run folder {run_dir} the driver "
        f"(node {driver_node[:8]}) wrote: put run_dir (and the model and data) on a filesystem every node "
        "mounts at the same path, or steer the trainer onto the driver's node with trainer.resources"
    )
