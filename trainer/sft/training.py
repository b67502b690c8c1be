"""Supervised fine-tuning with LoRA and assistant-only loss, in plain PyTorch (no HF Trainer).

The paper's recipe: AdamW with a cosine schedule and warm-up, gradient clipping, gradient
accumulation to an effective batch of 8, validation loss after each epoch with early stopping,
the best epoch's adapter kept. The loss is the mean over all answer tokens of an accumulation
window (not a mean of per-example means), so every answer token weighs the same.

Output folder: `adapter/` (best epoch), `checkpoints/` (the last epoch's, for `--resume`: the
scheme of trainer/checkpoint.py, GRPO's too), `metrics.jsonl` (a line per optimizer step and per
epoch), `sft_summary.json`, `sft_config.json`.
"""

import dataclasses
import functools
import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from safetensors.torch import save_file
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from shared.atomic_files import write_atomically
from shared.errors import UserError
from shared.jsonl import JsonlLog
from shared.manifest import ManifestRecord
from shared.prompts import PromptRegistry, user_messages
from trainer.checkpoint import (
    CHECKPOINTS,
    OLD_SFT_CHECKPOINTS,
    adopt_old_sft_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    read_checkpoint_state,
    save_adapter,
    save_checkpoint,
)
from trainer.model import (
    end_of_turn_ids,
    full_module_names,
    load_policy,
    resolve_device,
    resolve_dtype,
    trainable_parameters,
)
from trainer.sft.config import FULL_WEIGHTS_FILE, SftConfig
from trainer.sft.data import (
    IGNORE_INDEX,
    SftBatch,
    SftDataset,
    balance_labels,
    collate,
    hold_out_patients,
    read_sft_manifest,
)

log = logging.getLogger("cxr_rl.sft")
ADAPTER_NAME = "policy"


class SftSummary(BaseModel):
    model: str
    sft_format: str
    train_records: int
    val_records: int
    initial_val_loss: float  # before the first step
    train_loss: list[float]  # per epoch: mean over answer tokens
    val_loss: list[float]  # per epoch
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    steps: int
    stop_reason: str  # "running" | "epochs" | "early_stopping" | "max_steps"
    seconds: float
    adapter: str


@dataclasses.dataclass
class RunState:
    """What a resumed run needs besides weights and optimizer (kept as JSON in the checkpoint)."""

    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps taken
    initial_val_loss: float = math.nan
    train_loss: list[float] = dataclasses.field(default_factory=list)
    val_loss: list[float] = dataclasses.field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the validation loss last fell
    seconds: float = 0.0
    stop_reason: str = "running"

    def record_epoch(self, train_loss: float, val_loss: float, patience: int) -> bool:
        """Note a finished epoch; True when its validation loss is the lowest so far."""
        self.epoch += 1
        self.train_loss.append(train_loss)
        self.val_loss.append(val_loss)
        if val_loss < self.best_val_loss:
            self.best_val_loss, self.best_epoch, self.bad_epochs = val_loss, self.epoch, 0
            return True
        self.bad_epochs += 1
        if self.bad_epochs >= patience:
            self.stop_reason = "early_stopping"
        return False


def answer_loss(model: Any, batch: SftBatch) -> tuple[torch.Tensor, int]:
    """Summed negative log-likelihood of the answer tokens, and how many there are.

    Only logits from the first answer position on are materialised (`logits_to_keep`): with
    MedGemma's 262k vocabulary, logits over the whole prompt would dwarf the activations.
    """
    labels = batch.labels
    start = int((labels != IGNORE_INDEX).int().argmax(dim=1).min()) - 1
    output = model(**batch.inputs, logits_to_keep=labels.shape[1] - start, use_cache=False)
    logits = output.logits[:, :-1, :].float()
    targets = labels[:, start + 1 :]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss, int((targets != IGNORE_INDEX).sum())


@torch.no_grad()
def validation_loss(
    model: Any, loader: torch.utils.data.DataLoader, device: torch.device, dtype: torch.dtype
) -> float:
    """Mean negative log-likelihood per answer token over the validation set (dropout off)."""
    model.eval()
    total, tokens = 0.0, 0
    for batch in loader:
        loss, count = answer_loss(model, batch.to(device, dtype))
        total, tokens = total + float(loss), tokens + count
    model.train()
    return total / max(tokens, 1)


def accumulation_windows(loader: torch.utils.data.DataLoader, size: int) -> Iterator[list[SftBatch]]:
    window: list[SftBatch] = []
    for batch in loader:
        window.append(batch)
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window


def optimizer_step(
    model: Any, window: list[SftBatch], parameters: list, optimizer: Any, scheduler: Any, max_grad_norm: float
) -> dict[str, float]:
    """One optimizer step over an accumulation window, each micro-batch's loss divided by the
    window's answer-token count; returns the step's metrics."""
    tokens = sum(batch.answer_tokens() for batch in window)
    total = 0.0
    for batch in window:
        loss, _ = answer_loss(model, batch)
        (loss / tokens).backward()
        total += float(loss.detach())
    grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm))
    lr = scheduler.get_last_lr()[0]  # the rate this step uses
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": total / tokens, "lr": lr, "grad_norm": grad_norm, "answer_tokens": tokens}


def train_sft(config: SftConfig, out: Path, resume: bool = False) -> SftSummary:
    """Run (or, with `resume`, continue) SFT as `config` says, writing under `out`; returns the summary."""
    out = Path(out)
    prompts = PromptRegistry()
    if config.data.prompt_formats_file:
        prompts.add_from_file(config.data.prompt_formats_file)
    prompt_messages = user_messages(prompts.get(config.data.sft_format))
    train_records, val_records = sft_records(config)
    training = config.training
    train_records = balance_labels(train_records, training.label_balance, training.max_label_repeats)
    checkpoint = prepare_output(out, config, resume)
    if checkpoint is not None and config.train_in_full:
        raise UserError("--resume: checkpoints hold the LoRA only, not what train_in_full trains; start over")
    state = RunState(**read_checkpoint_state(checkpoint)) if checkpoint else RunState()
    if state.stop_reason != "running":
        result = summary(config, state, len(train_records), len(val_records), out)
        write_json(out / "sft_summary.json", result.model_dump())
        return result

    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    torch.manual_seed(training.seed)  # the new LoRA's initial weights
    model, processor = load_policy(
        config.model,
        config.lora,
        device=device,
        dtype=dtype,
        gradient_checkpointing=config.gradient_checkpointing,
        adapter_name=ADAPTER_NAME,
        min_pixels=config.min_pixels,
        max_pixels=config.max_pixels,
        train_in_full=config.train_in_full,
    )
    end_of_turn = end_of_turn_ids(config.model, processor)
    pad_id = processor.tokenizer.pad_token_id or 0

    def loader(records: list[ManifestRecord], shuffle_seed: int | None = None) -> torch.utils.data.DataLoader:
        # A generator of its own: the order is a function of the seed and the epoch, and drawing it
        # leaves the global RNG (dropout) alone, so a resumed run sees what an uninterrupted one would.
        generator = None if shuffle_seed is None else torch.Generator().manual_seed(shuffle_seed)
        return torch.utils.data.DataLoader(
            SftDataset(records, processor, prompt_messages, end_of_turn),
            batch_size=training.per_device_batch_size,
            shuffle=shuffle_seed is not None,
            generator=generator,
            num_workers=config.data.loader_workers,
            collate_fn=functools.partial(collate, pad_id=pad_id),  # picklable, for loader workers
        )

    val_loader = loader(val_records)
    batches_per_epoch = math.ceil(len(train_records) / training.per_device_batch_size)
    total_steps = math.ceil(batches_per_epoch / training.gradient_accumulation_steps) * training.epochs
    total_steps = min(total_steps, training.max_steps or total_steps)
    parameters = trainable_parameters(model)
    optimizer = torch.optim.AdamW(parameters, lr=training.learning_rate, weight_decay=training.weight_decay)
    warmup = math.ceil(training.warmup_ratio * total_steps)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    metrics = JsonlLog(out / "metrics.jsonl")
    if checkpoint is not None:  # its RNG states too: dropout masks continue as in an uninterrupted run
        load_checkpoint(
            checkpoint, model=model, adapter_name=ADAPTER_NAME, optimizer=optimizer, scheduler=scheduler
        )
        metrics.keep(
            lambda entry: entry.get("step", 0) <= state.step and entry.get("epoch", 0) <= state.epoch
        )
    else:
        metrics.path.unlink(missing_ok=True)  # a resumed run that never finished an epoch starts over
        state.initial_val_loss = validation_loss(model, val_loader, device, dtype)
        # total_steps: the optimizer steps the run will take at most (a progress bar's total)
        metrics.append(
            {
                "kind": "initial",
                "step": 0,
                "epoch": 0,
                "val_loss": state.initial_val_loss,
                "total_steps": total_steps,
            }
        )

    started = time.perf_counter()
    progress = tqdm(
        total=total_steps, initial=state.step, desc="sft", unit="step", disable=not config.progress
    )
    try:
        while state.stop_reason == "running":
            epoch = state.epoch + 1
            epoch_loss, epoch_tokens = 0.0, 0
            shuffled = loader(train_records, shuffle_seed=training.seed * 10_000 + epoch)
            for window in accumulation_windows(shuffled, training.gradient_accumulation_steps):
                window = [batch.to(device, dtype) for batch in window]
                step = optimizer_step(model, window, parameters, optimizer, scheduler, training.max_grad_norm)
                state.step += 1
                epoch_loss += step["loss"] * step["answer_tokens"]
                epoch_tokens += step["answer_tokens"]
                metrics.append({"kind": "step", "step": state.step, "epoch": epoch, **step})
                progress.update(1)
                progress.set_postfix(epoch=epoch, loss=f"{step['loss']:.4f}")
                if state.step >= total_steps:
                    break
            val_loss = validation_loss(model, val_loader, device, dtype)
            if state.record_epoch(
                epoch_loss / max(epoch_tokens, 1), val_loss, training.early_stopping_patience
            ):
                save_adapter(model, ADAPTER_NAME, out / "adapter")
                if config.train_in_full:
                    save_full_weights(model, config.train_in_full, out / "adapter" / FULL_WEIGHTS_FILE)
            if state.stop_reason == "running" and state.step >= total_steps:
                state.stop_reason = "epochs" if state.epoch >= training.epochs else "max_steps"
            state.seconds += time.perf_counter() - started
            started = time.perf_counter()
            metrics.append(
                {"kind": "epoch", "step": state.step, "epoch": epoch, "train_loss": state.train_loss[-1],
                 "val_loss": val_loss, "best_epoch": state.best_epoch, "seconds": round(state.seconds, 2)}
            )  # fmt: skip
            result = summary(config, state, len(train_records), len(val_records), out)
            if state.stop_reason != "running":  # its presence says the run is done (the driver relies on it)
                write_json(out / "sft_summary.json", result.model_dump())
            save_checkpoint(
                out, state.step, model=model, adapter_name=ADAPTER_NAME, optimizer=optimizer,
                scheduler=scheduler, state=dataclasses.asdict(state),
            )  # fmt: skip
            prune_checkpoints(out, keep=1)
    finally:
        progress.close()
    return result


def save_full_weights(model: Any, patterns: tuple[str, ...], path: Path) -> None:
    """The base parameters `train_in_full` trained, under the base model's own names (PEFT's
    `base_model.model.` prefix and LoRA's `.base_layer` dropped), so they load into the base before
    the adapter does."""
    parameters = dict(model.named_parameters())
    tensors = {}
    for name in full_module_names(model, patterns):
        base_name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        tensors[base_name] = parameters[name].detach().to("cpu", copy=True).contiguous()
    staging = path.with_name(path.name + ".partial")
    save_file(tensors, staging)
    staging.replace(path)


def sft_records(config: SftConfig) -> tuple[list[ManifestRecord], list[ManifestRecord]]:
    train = read_sft_manifest(config.data.train_manifest)
    if config.data.val_manifest is not None:
        return train, read_sft_manifest(config.data.val_manifest)
    return hold_out_patients(train, config.data.val_fraction, config.data.split_seed)


def summary(
    config: SftConfig, state: RunState, train_records: int, val_records: int, out: Path
) -> SftSummary:
    return SftSummary(
        model=str(config.model),
        sft_format=config.data.sft_format,
        train_records=train_records,
        val_records=val_records,
        initial_val_loss=state.initial_val_loss,
        train_loss=state.train_loss,
        val_loss=state.val_loss,
        best_epoch=state.best_epoch,
        best_val_loss=state.best_val_loss,
        epochs_run=state.epoch,
        steps=state.step,
        stop_reason=state.stop_reason,
        seconds=round(state.seconds, 2),
        adapter=str(out / "adapter"),
    )


# --- the output folder ---------------------------------------------------------------------------


def prepare_output(out: Path, config: SftConfig, resume: bool) -> Path | None:
    """Check `out` against `resume` and the config; returns the checkpoint to resume from, if any.
    Resuming a run that has not finished an epoch yet (or none at all) starts it from the beginning."""
    recorded = out / "sft_config.json"
    wanted = config.model_dump(mode="json", exclude={"out", "progress"})
    if not recorded.is_file():
        if any((out / name).exists() for name in (CHECKPOINTS, *OLD_SFT_CHECKPOINTS)):
            raise UserError(f"{out} holds an SFT checkpoint but no sft_config.json; choose another --out")
        write_json(recorded, wanted)
        return None
    if not resume:
        raise UserError(
            f"{out} already holds an SFT run; pass --resume to continue it, or choose another --out"
        )
    differing = changed_keys(json.loads(recorded.read_text()), wanted)
    if differing:
        raise UserError(f"--resume: the config differs from the run's in {', '.join(differing)}")
    checkpoint = adopt_old_sft_checkpoint(out) or latest_checkpoint(out)
    if checkpoint is None:
        log.warning("no finished epoch to resume from in %s; starting from the beginning", out)
    return checkpoint


def changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(prefix + key)
    return keys


def write_json(path: Path, data: Any) -> None:
    write_atomically(path, json.dumps(data, indent=2) + "\n")
