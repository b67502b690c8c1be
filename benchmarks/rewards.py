"""Rewards per second for each reward, in process, as a Ray actor and over HTTP, for batches of 16
and 256 completions, side by side. The last line printed is one JSON object of the figures:
{"<reward>": {"<backend>": {"<batch size>": rewards_per_second}}}.

    python benchmarks/rewards.py [--seconds 2] [--batch-sizes 16 256] [--rewards hard nuanced]
"""

import argparse
import json
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# This script is named like the package it measures: keep its own folder off the import path.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

import httpx  # noqa: E402
from tqdm import tqdm  # noqa: E402

from rewards.client import RewardClient  # noqa: E402
from rewards.registry import load_reward  # noqa: E402
from shared.labels import CHEXPERT_LABELS  # noqa: E402
from shared.schemas import RewardItem  # noqa: E402

BACKENDS = ("in-process", "ray-actor", "http")

THINK = (
    "1. Image quality: adequate inspiration, no rotation. 2. Position: PA upright. 3. Devices: {devices}. "
    "4. Trachea: midline. 5. Mediastinum: normal width. 6. Heart: {heart}. 7. Hila: unremarkable. "
    "8. Right lung: {right}. 9. Left lung: clear. 10. Pleura: {pleura}. 11. Bones: no acute fracture. "
    "12. Summary: {summary}."
)


def make_completions(count: int, seed: int = 0) -> list[RewardItem]:
    """Reasoning-A style completions (about 150 words) with random labels, a few malformed."""
    rng = random.Random(seed)
    items = []
    for index in range(count):
        truth = sorted(rng.sample(CHEXPERT_LABELS[1:], rng.randint(1, 3)), key=CHEXPERT_LABELS.index)
        predicted = truth if rng.random() < 0.5 else sorted(rng.sample(CHEXPERT_LABELS, rng.randint(1, 3)))
        think = THINK.format(
            devices="endotracheal tube in place" if "Support Devices" in predicted else "none",
            heart="enlarged" if "Cardiomegaly" in predicted else "normal size",
            right="patchy opacity at the base" if "Lung Opacity" in predicted else "clear",
            pleura="blunted costophrenic angle" if "Pleural Effusion" in predicted else "no effusion",
            summary=", ".join(predicted).lower(),
        )
        text = f"<think>{think}</think>\n<solution>{', '.join(predicted)}</solution>"
        if index % 10 == 9:
            text += "\nI hope this helps."  # a malformed one now and then
        items.append(RewardItem(text=text, labels=truth, n_tokens=rng.randint(120, 400)))
    return items


def rewards_per_second(client: RewardClient, batch: list[RewardItem], seconds: float) -> float:
    client.score("warm-up", batch)
    scored, batches, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds or batches < 3:
        client.score(f"batch-{batches}", batch)
        scored += len(batch)
        batches += 1
    return scored / (time.perf_counter() - start)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def http_service(spec: str) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "cxr_rl.cli", "reward", "serve", "--name", spec, "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"reward service for {spec!r} did not start") from None
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def measure(spec: str, backend: str, batch_sizes: list[int], seconds: float) -> dict[str, float]:
    batches = {size: make_completions(size) for size in batch_sizes}

    def run(make_client: Callable[[], RewardClient]) -> dict[str, float]:
        figures = {}
        for size, batch in batches.items():
            with make_client() as client:
                figures[str(size)] = round(rewards_per_second(client, batch, seconds), 1)
        return figures

    if backend == "in-process":
        return run(lambda: RewardClient.in_process(load_reward(spec)))
    if backend == "ray-actor":
        import ray

        from rewards.worker import start_reward_worker

        actor = start_reward_worker(spec)
        try:
            return run(lambda: RewardClient.for_actor(actor))
        finally:
            ray.kill(actor)
    with http_service(spec) as url:
        return run(lambda: RewardClient.for_url(url))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="time spent measuring each figure (default 2)"
    )
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[16, 256], help="batch sizes (default 16 256)"
    )
    parser.add_argument("--rewards", nargs="+", default=["hard", "nuanced"], help="rewards to measure")
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    figures: dict[str, dict[str, dict[str, float]]] = {}
    try:
        runs = [(spec, backend) for spec in args.rewards for backend in BACKENDS]
        for spec, backend in tqdm(runs, desc="measuring", file=sys.stderr):
            figures.setdefault(spec, {})[backend] = measure(spec, backend, args.batch_sizes, args.seconds)
    finally:
        ray.shutdown()

    columns = [f"{backend} b={size}" for backend in BACKENDS for size in args.batch_sizes]
    print("rewards/s   " + "  ".join(f"{column:>18}" for column in columns))
    for spec, by_backend in figures.items():
        cells = [by_backend[backend][str(size)] for backend in BACKENDS for size in args.batch_sizes]
        print(f"{spec:<10}  " + "  ".join(f"{cell:>18,.0f}" for cell in cells))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
