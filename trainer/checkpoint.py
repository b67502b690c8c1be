"""Checkpoints of SFT and GRPO runs, one scheme: checkpoints that resume exactly.

`<run>/checkpoints/step-NNNNNN/` holds the adapter (PEFT's layout, which vLLM loads too),
`trainer.pt` (optimizer, scheduler, RNG states) and `state.json` (what the run needs besides:
its step, data order, the reward's carried state, ...). A folder appears whole or not at all
(written aside, then renamed), and `checkpoints/latest` names the newest complete one. Every write
goes through shared/atomic_files.py.
"""

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from shared.atomic_files import atomic_folder, write_atomically
from shared.errors import UserError
from trainer.lora import adapter_config_dict, lora_state_dict

CHECKPOINTS = "checkpoints"
LATEST = "latest"
TRAINER_STATE = "trainer.pt"
RUN_STATE = "state.json"


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
    """The adapter's PEFT files (adapter_config.json, adapter_model.safetensors) directly in `folder`,
    loadable by `PeftModel.from_pretrained` and by vLLM; what was there is replaced only once the new
    files are complete."""
    with atomic_folder(folder) as staging:
        save_file(lora_state_dict(model, adapter_name), staging / "adapter_model.safetensors")
        config = adapter_config_dict(model, adapter_name)
        (staging / "adapter_config.json").write_text(json.dumps(config, indent=2))


def load_adapter_weights(model: Any, adapter_name: str, folder: Path) -> None:
    result = set_peft_model_state_dict(
        model, load_file(folder / "adapter_model.safetensors"), adapter_name=adapter_name
    )
    unexpected = [key for key in getattr(result, "unexpected_keys", []) if "lora_" in key]
    if unexpected:
        raise RuntimeError(f"checkpoint adapter does not fit the model: unexpected keys {unexpected[:3]}")


def save_checkpoint(
    run_dir: Path, step: int, *, model: Any, adapter_name: str, optimizer: Any, scheduler: Any, state: dict
) -> Path:
    trainer_state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": capture_rng(),
    }
    return write_checkpoint(
        run_dir, step, lambda folder: save_adapter(model, adapter_name, folder), trainer_state, state
    )


def write_checkpoint(
    run_dir: Path, step: int, write_adapter: Callable[[Path], Any], trainer_state: dict, state: dict
) -> Path:
    """`checkpoints/step-NNNNNN/` of `run_dir`, whole, and `latest` pointing at it."""
    folder = Path(run_dir) / CHECKPOINTS / f"step-{step:06d}"
    with atomic_folder(folder) as staging:
        write_adapter(staging / "adapter")
        torch.save(trainer_state, staging / TRAINER_STATE)
        (staging / RUN_STATE).write_text(json.dumps(state, indent=2))
    write_atomically(folder.parent / LATEST, folder.name)
    return folder


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None when the run has none yet."""
    pointer = Path(run_dir) / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    folder = pointer.parent / pointer.read_text().strip()
    if not (folder / RUN_STATE).is_file():
        raise UserError(
            f"{pointer} names {folder.name}, which is not a complete checkpoint (no {RUN_STATE}); "
            f"point it at another step-* folder there, or start the run afresh in another folder"
        )
    return folder


def read_checkpoint_state(folder: Path) -> dict:
    return json.loads((folder / RUN_STATE).read_text())


def load_checkpoint(folder: Path, *, model: Any, adapter_name: str, optimizer: Any, scheduler: Any) -> dict:
    load_adapter_weights(model, adapter_name, folder / "adapter")
    saved = torch.load(folder / TRAINER_STATE, weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    restore_rng(saved["rng"])
    return read_checkpoint_state(folder)


def prune_checkpoints(run_dir: Path, keep: int, protect: set[str] = frozenset()) -> None:
    """Remove all but the newest `keep` checkpoints (and those named in `protect`)."""
    folders = sorted(path for path in (Path(run_dir) / CHECKPOINTS).glob("step-*") if path.name[5:].isdigit())
    for folder in folders[:-keep]:
        if folder.name not in protect:
            shutil.rmtree(folder, ignore_errors=True)


# Run folders an earlier cxr-rl wrote kept SFT's last epoch in `checkpoint/` (`.checkpoint.old` when a
# swap was cut short), the run state inside `trainer_state.pt`.
OLD_SFT_CHECKPOINTS = ("checkpoint", ".checkpoint.old")


def adopt_old_sft_checkpoint(out: Path) -> Path | None:
    """Move an SFT run folder's old-layout checkpoint into the scheme, so that it resumes as it would
    have; None when there is none. One that cannot be read is refused, saying so."""
    old = next(
        (out / name for name in OLD_SFT_CHECKPOINTS if (out / name / "trainer_state.pt").is_file()), None
    )
    if old is None:
        return None
    try:
        saved = torch.load(old / "trainer_state.pt", weights_only=False)
        state = saved.pop("state")
        step = int(state["step"])
        if not (old / "adapter" / "adapter_model.safetensors").is_file():
            raise FileNotFoundError("adapter/adapter_model.safetensors is missing")
    except Exception as error:
        raise UserError(
            f"{old} is an SFT checkpoint in the layout of an earlier cxr-rl that cannot be read "
            f"({type(error).__name__}: {error}); it cannot be resumed: start the run again with another --out"
        ) from None
    folder = write_checkpoint(out, step, lambda into: shutil.copytree(old / "adapter", into), saved, state)
    for name in OLD_SFT_CHECKPOINTS:
        shutil.rmtree(out / name, ignore_errors=True)
    return folder
