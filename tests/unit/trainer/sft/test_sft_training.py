"""SFT on phantom X-rays with a tiny model on the CPU: the validation loss falls, the best adapter
is written and loads again, early stopping stops, and an interrupted run resumes to the same result."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from shared.errors import UserError
from shared.manifest import read_manifest, write_manifest
from trainer.checkpoint import latest_checkpoint
from trainer.lora import LoraSettings
from trainer.model import load_policy
from trainer.sft import training as sft
from trainer.sft.config import SftConfig
from trainer.sft.training import RunState, SftSummary, train_sft, validation_loss
from trainer.templates import with_synthetic_targets

TRAIN_RECORDS, VAL_RECORDS = 6, 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sft_manifests(phantom_root, tmp_path_factory) -> tuple[Path, Path]:
    """Small train and validation manifests with synthetic Only-Label targets (short answers keep
    the CPU steps cheap), written beside the phantom manifests so relative image paths hold."""
    source = phantom_root / "manifests" / "mimic_train.jsonl"
    records = with_synthetic_targets(read_manifest(source), "only_label", seed=0)
    folder = tmp_path_factory.mktemp("sft-data")
    absolute = [r.model_copy(update={"image": str(r.image_path(source.parent).resolve())}) for r in records]
    train = write_manifest(absolute[:TRAIN_RECORDS], folder / "train.jsonl")
    val = write_manifest(absolute[TRAIN_RECORDS : TRAIN_RECORDS + VAL_RECORDS], folder / "val.jsonl")
    return train, val


def make_config(model: Path, manifests: tuple[Path, Path], **training) -> SftConfig:
    settings = {
        "learning_rate": 2e-2,
        "gradient_accumulation_steps": 3,
        "epochs": 2,
        "warmup_ratio": 0.0,
        **training,
    }
    return SftConfig.model_validate(
        {
            "model": str(model),
            "data": {
                "train_manifest": str(manifests[0]),
                "val_manifest": str(manifests[1]),
                "sft_format": "only_label",
            },  # fmt: skip
            "training": settings,
            "progress": False,
        }
    )


@pytest.fixture(scope="module")
def finished_run(tiny_medgemma, sft_manifests, tmp_path_factory) -> tuple[SftConfig, Path, SftSummary]:
    config = make_config(tiny_medgemma, sft_manifests)
    out = tmp_path_factory.mktemp("sft-run")
    return config, out, train_sft(config, out)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_sft_lowers_the_validation_loss(finished_run):
    _, out, summary = finished_run
    assert summary.stop_reason == "epochs" and summary.epochs_run == 2
    assert summary.steps == 2 * math.ceil(TRAIN_RECORDS / 3)
    assert summary.val_loss[-1] < summary.initial_val_loss - 0.05
    assert summary.best_val_loss == min(summary.val_loss)
    assert summary.val_loss[summary.best_epoch - 1] == summary.best_val_loss
    written = SftSummary.model_validate_json((out / "sft_summary.json").read_text())
    assert written == summary
    steps = [entry for entry in metrics(out) if entry["kind"] == "step"]
    assert [entry["step"] for entry in steps] == list(range(1, summary.steps + 1))
    assert all(entry["answer_tokens"] > 0 and math.isfinite(entry["loss"]) for entry in steps)


def test_the_first_metrics_line_gives_the_step_total_a_progress_bar_needs(finished_run):
    """The driver's SFT bar reads its total (hence an ETA) from the first line, before any step."""
    _, out, summary = finished_run
    first = metrics(out)[0]
    assert first["kind"] == "initial"
    assert first["total_steps"] == summary.steps == 2 * math.ceil(TRAIN_RECORDS / 3)


def test_the_best_adapter_loads_and_reproduces_its_validation_loss(finished_run, sft_manifests):
    config, out, summary = finished_run
    adapter = out / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    model, processor = load_policy(
        config.model,
        LoraSettings(),
        device="cpu",
        adapter_path=adapter,
        trainable=False,
        gradient_checkpointing=False,
    )
    assert not any(parameter.requires_grad for parameter in model.parameters())
    val_loader = validation_loader(config, processor)
    assert validation_loss(model, val_loader, torch.device("cpu"), torch.float32) == pytest.approx(
        summary.best_val_loss, rel=1e-5
    )
    # GRPO keeps a frozen reference next to the policy in the same PeftModel
    model.load_adapter(str(adapter), adapter_name="reference", is_trainable=False)
    assert set(model.peft_config) == {"policy", "reference"}


def validation_loader(config: SftConfig, processor) -> torch.utils.data.DataLoader:
    from shared.prompts import PromptRegistry, user_messages
    from trainer.model import end_of_turn_ids
    from trainer.sft.data import SftDataset, collate, read_sft_manifest

    dataset = SftDataset(
        read_sft_manifest(config.data.val_manifest),
        processor,
        user_messages(PromptRegistry().get(config.data.sft_format)),
        end_of_turn_ids(config.model, processor),
    )
    return torch.utils.data.DataLoader(
        dataset, batch_size=1, collate_fn=lambda examples: collate(examples, 0)
    )


def crash_after_the_first_checkpoint(config: SftConfig, out: Path, monkeypatch) -> None:
    real_save_checkpoint = sft.save_checkpoint

    def crash(*args, **kwargs):
        real_save_checkpoint(*args, **kwargs)
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(sft, "save_checkpoint", crash)
    with pytest.raises(KeyboardInterrupt):
        train_sft(config, out)
    monkeypatch.setattr(sft, "save_checkpoint", real_save_checkpoint)


def test_checkpoints_follow_the_one_scheme(finished_run):
    _, out, summary = finished_run
    latest = out / "checkpoints" / f"step-{summary.steps:06d}"
    assert (out / "checkpoints" / "latest").read_text() == latest.name
    assert [path.name for path in (out / "checkpoints").iterdir()] == sorted(["latest", latest.name])
    assert sorted(path.name for path in latest.iterdir()) == ["adapter", "state.json", "trainer.pt"]
    assert json.loads((latest / "state.json").read_text())["stop_reason"] == "epochs"


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(finished_run, tmp_path, monkeypatch):
    config, _, uninterrupted = finished_run
    crash_after_the_first_checkpoint(config, tmp_path, monkeypatch)
    with (tmp_path / "metrics.jsonl").open("a") as log:  # a step the crash left after the checkpoint
        log.write(json.dumps({"kind": "step", "step": 99, "epoch": 2, "loss": 0.0}) + "\n")

    with pytest.raises(UserError, match="--resume"):
        train_sft(config, tmp_path)  # a second fresh run must not overwrite the first
    resumed = train_sft(config, tmp_path, resume=True)

    assert resumed.epochs_run == uninterrupted.epochs_run and resumed.steps == uninterrupted.steps
    assert resumed.initial_val_loss == pytest.approx(uninterrupted.initial_val_loss, rel=1e-6)
    assert resumed.val_loss == pytest.approx(uninterrupted.val_loss, rel=1e-5)
    assert resumed.train_loss == pytest.approx(uninterrupted.train_loss, rel=1e-5)
    steps = [entry["step"] for entry in metrics(tmp_path) if entry["kind"] == "step"]
    assert steps == list(range(1, resumed.steps + 1))
    assert train_sft(config, tmp_path, resume=True) == resumed  # a finished run has nothing left to do


def to_old_layout(out: Path) -> None:
    """What an earlier cxr-rl left after an epoch: `checkpoint/` holding the adapter and
    `trainer_state.pt` (optimizer, scheduler, RNG and the run state together)."""
    folder = latest_checkpoint(out)
    saved = torch.load(folder / "trainer.pt", weights_only=False)
    saved["state"] = json.loads((folder / "state.json").read_text())
    shutil.copytree(folder / "adapter", out / "checkpoint" / "adapter")
    torch.save(saved, out / "checkpoint" / "trainer_state.pt")
    shutil.rmtree(out / "checkpoints")


def test_a_run_folder_of_the_old_layout_resumes_to_the_uninterrupted_result(
    finished_run, tmp_path, monkeypatch
):
    config, _, uninterrupted = finished_run
    crash_after_the_first_checkpoint(config, tmp_path, monkeypatch)
    to_old_layout(tmp_path)
    resumed = train_sft(config, tmp_path, resume=True)
    assert resumed.steps == uninterrupted.steps
    assert resumed.val_loss == pytest.approx(uninterrupted.val_loss, rel=1e-5)
    assert resumed.train_loss == pytest.approx(uninterrupted.train_loss, rel=1e-5)
    assert not (tmp_path / "checkpoint").exists()
    assert (tmp_path / "checkpoints" / "latest").read_text() == f"step-{resumed.steps:06d}"


def test_an_old_layout_checkpoint_that_cannot_be_read_is_refused(finished_run, tmp_path):
    config, _, _ = finished_run
    (tmp_path / "sft_config.json").write_text(
        json.dumps(config.model_dump(mode="json", exclude={"out", "progress"}))
    )
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "trainer_state.pt").write_bytes(b"cut short")
    with pytest.raises(
        UserError, match=r"layout of an earlier cxr-rl .* start the run again with another --out"
    ):
        train_sft(config, tmp_path, resume=True)
    assert (tmp_path / "checkpoint" / "trainer_state.pt").read_bytes() == b"cut short"  # left alone


def test_resume_refuses_a_changed_config(finished_run):
    config, out, _ = finished_run
    changed = config.model_copy(update={"lora": LoraSettings(rank=8)})
    with pytest.raises(UserError, match="lora.rank"):
        train_sft(changed, out, resume=True)


def test_early_stopping_stops_when_validation_loss_stops_falling(tiny_medgemma, sft_manifests, tmp_path):
    # learning rate 0: the validation loss never improves on epoch 1, so patience 2 ends epoch 3 of 6
    config = make_config(
        tiny_medgemma,
        sft_manifests,
        learning_rate=0.0,
        epochs=6,
        early_stopping_patience=2,
        gradient_accumulation_steps=8,
    )
    config = config.model_copy(update={"gradient_checkpointing": False})
    summary = train_sft(config, tmp_path)
    assert summary.stop_reason == "early_stopping"
    assert summary.epochs_run == 3 and summary.best_epoch == 1
    assert summary.val_loss == pytest.approx([summary.initial_val_loss] * 3, rel=1e-6)


def test_patience_counts_epochs_since_the_best():
    state = RunState()
    improved = [state.record_epoch(1.0, loss, patience=2) for loss in (3.0, 2.0, 2.5, 1.5, 1.6, 1.5)]
    assert improved == [True, True, False, True, False, False]
    assert state.stop_reason == "early_stopping" and state.best_epoch == 4 and state.best_val_loss == 1.5


def test_qwen_trains_and_stops_at_max_steps(tiny_qwen, sft_manifests, tmp_path):
    config = make_config(tiny_qwen, sft_manifests, max_steps=1, gradient_accumulation_steps=2)
    config = config.model_copy(update={"min_pixels": 16 * 28 * 28, "max_pixels": 32 * 28 * 28})
    summary = train_sft(config, tmp_path)
    assert summary.stop_reason == "max_steps" and summary.steps == 1 and summary.epochs_run == 1
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_train_in_full_trains_the_named_base_parts_and_saves_them_under_the_base_names(
    tiny_medgemma, sft_manifests, tmp_path
):
    """The diagnostic of issue 15: what SFT trains in full beside the LoRA is saved beside the
    adapter, changed by training, under names that load into the base model (LoRA's wrapping
    stripped); nothing else of the base is saved."""
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    from trainer.sft.config import FULL_WEIGHTS_FILE

    parts = ("multi_modal_projector", "language_model.layers.0.self_attn.q_proj")
    config = make_config(tiny_medgemma, sft_manifests, max_steps=1).model_copy(
        update={"train_in_full": parts}
    )
    train_sft(config, tmp_path)
    saved = load_file(tmp_path / "adapter" / FULL_WEIGHTS_FILE)
    base = AutoModelForImageTextToText.from_pretrained(tiny_medgemma, dtype=torch.float32)
    before = base.state_dict()
    assert sorted(saved) == [
        "model.language_model.layers.0.self_attn.q_proj.weight",
        "model.multi_modal_projector.mm_input_projection_weight",
        "model.multi_modal_projector.mm_soft_emb_norm.weight",
    ]
    assert all(not torch.equal(saved[name], before[name]) for name in saved)
    assert base.load_state_dict(saved, strict=False).unexpected_keys == []


def test_train_in_full_names_a_part_the_model_lacks(tiny_medgemma):
    with pytest.raises(UserError, match="'no_such_part'"):
        load_policy(tiny_medgemma, LoraSettings(), device="cpu", train_in_full=("no_such_part",))
