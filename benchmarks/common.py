"""Pieces the benchmark scripts share: a real `cxr-rl serve` process, phantom X-rays as bytes, a
random (live) LoRA adapter over a base model, and that adapter merged into a servable checkpoint."""

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from shared.atomic_files import atomic_folder

WEIGHT_SUFFIXES = (".safetensors", ".bin")
WEIGHT_INDEX = "model.safetensors.index.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class ServerProcess:
    """A real `cxr-rl serve` process on 127.0.0.1 from a server config (a dict of ServerConfig's
    fields). Use as a context manager, or call `stop()`: it ends the server and its engine."""

    def __init__(self, config: dict[str, Any], folder: Path, token: str | None = None):
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.log_path = folder / "server.log"
        config_path = folder / "server.yaml"
        config_path.write_text(yaml.safe_dump({**config, "api_token": token}))
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        command = [sys.executable, "-m", "cxr_rl.cli", "serve", "--config", str(config_path)]
        with self.log_path.open("w") as log:
            # Its own session: a Ctrl-C meant for the caller does not reach it half-way, and
            # `stop()` can end the whole group (the server and vLLM's engine-core child).
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout_s: float = 600.0) -> None:
        from rollout_server.client import RolloutClient

        deadline = time.monotonic() + timeout_s
        with RolloutClient(self.url, token=self.token) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"server exited with code {self.process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    client.wait_ready(timeout_s=5)
                    return
                except TimeoutError:
                    continue
        raise TimeoutError(f"server not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()  # uvicorn's graceful shutdown also shuts the engine down
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # anything of the group still running
        self.process.wait(10)


def phantom_xrays(out: Path, count: int, seed: int = 0, size: int = 512) -> list[bytes]:
    """`count` distinct phantom chest X-rays (JPEG/PNG bytes) drawn by `dataprep.phantoms.datasets`."""
    from dataprep.phantoms.datasets import make_phantoms

    studies = max(1, math.ceil(count / 3))  # a phantom study has about 3.9 images
    while True:
        make_phantoms(out, n=studies, seed=seed, size=size)
        paths = sorted(path for path in out.rglob("*") if path.suffix in (".jpg", ".png"))
        if len(paths) >= count:
            return [path.read_bytes() for path in paths[:count]]
        studies *= 2


def random_lora_model(model_dir: Path, seed: int, scale: float = 0.05, rank: int = 16) -> Any:
    """The base model with a PEFT LoRA (the trainer's settings) whose B matrices are random and
    non-zero, so the adapter changes what the model samples (a fresh LoRA is a no-op)."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    from trainer.lora import LoraSettings

    base = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    settings = LoraSettings(rank=rank, alpha=2 * rank)
    model = get_peft_model(base, settings.peft_config(), adapter_name="policy")
    randomise_lora(model, seed, scale)
    return model.eval()


def randomise_lora(model: Any, seed: int, scale: float = 0.05) -> None:
    """Draw new LoRA weights in place: another adapter over the same base, without a second copy."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                values = torch.randn(parameter.shape, generator=generator)
                parameter.copy_(values * (scale if "lora_B" in name else 1 / parameter.shape[-1] ** 0.5))


def save_merged_model(peft_model: Any, base_dir: Path, out: Path) -> Path:
    """Merge the LoRA into the base weights (PEFT `merge_and_unload`) and save a checkpoint vLLM
    serves: the base folder's processor files, the merged weights under the base's tensor names.

    The PEFT model is consumed (its LoRA layers are folded away)."""
    merged = peft_model.merge_and_unload()
    with atomic_folder(out) as staging:
        for path in base_dir.iterdir():
            if path.is_file() and not path.name.endswith(WEIGHT_SUFFIXES) and path.name != WEIGHT_INDEX:
                shutil.copy2(path, staging / path.name)
        merged.save_pretrained(staging)
        _align_tensor_names(staging, base_dir)
    return out


def _align_tensor_names(folder: Path, base_dir: Path) -> None:
    """transformers 5 saves Gemma3's SigLIP tower as `vision_tower.*` where the hub checkpoints
    (and vLLM 0.32) have `vision_tower.vision_model.*`: give every tensor the base's name."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    def tensor_names(directory: Path) -> set[str]:
        names: set[str] = set()
        for path in directory.glob("*.safetensors"):
            with safe_open(str(path), "pt") as tensors:
                names.update(tensors.keys())
        return names

    wanted = tensor_names(base_dir)
    renames: dict[str, str] = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors = load_file(path)
        for name in list(tensors):
            if name in wanted:
                continue
            for prefix in ("model.vision_tower.", "vision_tower."):
                if name.startswith(prefix) and prefix + "vision_model." + name[len(prefix) :] in wanted:
                    renames[name] = prefix + "vision_model." + name[len(prefix) :]
                    break
            else:
                raise RuntimeError(f"merged tensor {name!r} has no counterpart in {base_dir}")
        save_file({renames.get(k, k): v.contiguous() for k, v in tensors.items()}, path, {"format": "pt"})
    index = folder / WEIGHT_INDEX
    if index.is_file():
        data = json.loads(index.read_text())
        data["weight_map"] = {renames.get(k, k): v for k, v in data["weight_map"].items()}
        index.write_text(json.dumps(data, indent=2))
    missing = wanted - tensor_names(folder)
    if missing:
        raise RuntimeError(f"merged checkpoint lacks {len(missing)} base tensors, e.g. {sorted(missing)[0]}")
