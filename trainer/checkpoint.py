"""Checkpoints that resume exactly: adapter, optimizer, scheduler, step, RNG states, data order and
the reward's carried state. A checkpoint folder appears whole or not at all (written aside, then
renamed), and `latest` names the newest complete one."""

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from trainer.lora import adapter_config_dict, lora_state_dict

LATEST = "latest"


def capture_rng() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_adapter(model: Any, adapter_name: str, folder: Path) -> None:
    """PEFT's on-disk layout: loadable by `PeftModel.from_pretrained` and by vLLM."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(lora_state_dict(model, adapter_name), folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text(
        json.dumps(adapter_config_dict(model, adapter_name), indent=2)
    )


def load_adapter_weights(model: Any, adapter_name: str, folder: Path) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(
        model, load_file(folder / "adapter_model.safetensors"), adapter_name=adapter_name
    )
    unexpected = [key for key in getattr(result, "unexpected_keys", []) if "lora_" in key]
    if unexpected:
        raise RuntimeError(f"checkpoint adapter does not fit the model: unexpected keys {unexpected[:3]}")


def save_checkpoint(
    run_dir: Path, step: int, *, model: Any, adapter_name: str, optimizer: Any, scheduler: Any, state: dict
) -> Path:
    final = run_dir / "checkpoints" / f"step-{step:06d}"
    staging = final.with_name(final.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    save_adapter(model, adapter_name, staging / "adapter")
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": capture_rng()},
        staging / "trainer.pt",
    )
    (staging / "state.json").write_text(json.dumps(state, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    pointer = run_dir / "checkpoints" / f".{LATEST}.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, run_dir / "checkpoints" / LATEST)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    folder = run_dir / "checkpoints" / pointer.read_text().strip()
    return folder if (folder / "state.json").is_file() else None


def load_checkpoint(folder: Path, *, model: Any, adapter_name: str, optimizer: Any, scheduler: Any) -> dict:
    load_adapter_weights(model, adapter_name, folder / "adapter")
    saved = torch.load(folder / "trainer.pt", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    restore_rng(saved["rng"])
    return json.loads((folder / "state.json").read_text())


def prune_checkpoints(run_dir: Path, keep: int, protect: set[str] = frozenset()) -> None:
    folders = sorted(
        path for path in (run_dir / "checkpoints").glob("step-*") if not path.name.endswith(".partial")
    )
    for folder in folders[:-keep]:
        if folder.name not in protect:
            shutil.rmtree(folder, ignore_errors=True)
