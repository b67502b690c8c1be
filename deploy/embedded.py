"""The embedded default: a tiny MedGemma-architecture model and a phantom dataset built inside the
run folder (reused when already there), split like the paper's data into SFT, RL and validation
sets, with the shifted NIH-style phantoms as the out-of-distribution set."""

import logging
from dataclasses import dataclass
from pathlib import Path

from deploy.config import EMBEDDED_MODEL, RunConfig
from shared.errors import UserError
from shared.manifest import read_manifest, write_manifest

log = logging.getLogger("cxr_rl.driver")


@dataclass(frozen=True)
class RunInputs:
    model: Path
    sft_manifest: Path | None
    rl_manifest: Path
    val_manifest: Path | None
    ood_manifest: Path | None


def prepare_model(config: RunConfig, run_dir: Path) -> Path:
    if config.model != EMBEDDED_MODEL:
        model = Path(config.model)
        if not (model / "config.json").is_file():
            raise UserError(f"model: no checkpoint at {model} (expected a folder with config.json)")
        return model
    from tiny_models import build_tiny_model

    return build_tiny_model("medgemma", run_dir / "model", seed=0)


def prepare_phantom_data(config: RunConfig, run_dir: Path) -> RunInputs:
    """Phantoms -> patient-disjoint SFT / RL / validation sets (35 / 35 / 15 % of the pool; the slack
    lets whole patients fall into one set) and the NIH-style phantoms as the OOD set; SFT targets
    are synthetic (no teacher model in the demo)."""
    from dataprep.loading import LoadOptions
    from dataprep.mimic import load_mimic
    from dataprep.phantoms import make_phantoms
    from dataprep.split import draw_split
    from trainer.templates import with_synthetic_targets

    phantoms = config.data.phantoms
    data_dir = run_dir / "data"
    manifests = data_dir / "manifests"
    sft_path, rl_path, val_path, ood_path = (
        manifests / f"{name}.jsonl" for name in ("sft", "rl", "val", "ood")
    )
    if all(path.is_file() for path in (sft_path, rl_path, val_path, ood_path)):
        return RunInputs(prepare_model(config, run_dir), sft_path, rl_path, val_path, ood_path)
    root = data_dir / "phantoms"
    make_phantoms(root, n=phantoms.n, seed=phantoms.seed)
    pool = load_mimic(root / "mimic", LoadOptions(progress=False)).records
    sizes = {"sft": int(len(pool) * 0.35), "rl": int(len(pool) * 0.35), "val": max(4, int(len(pool) * 0.15))}
    sets = draw_split(pool, sizes, seed=phantoms.seed)
    write_manifest(with_synthetic_targets(sets["sft"], config.data.sft_format, seed=phantoms.seed), sft_path)
    write_manifest(sets["rl"], rl_path)
    write_manifest(sets["val"], val_path)
    nih = [
        record.model_copy(update={"image": str(record.image_path(root / "manifests").resolve())})
        for name in ("nih_test.jsonl", "nih_train_val.jsonl")
        for record in read_manifest(root / "manifests" / name)
    ]
    write_manifest(nih, ood_path)
    log.info(
        "phantom data: %s, OOD %d NIH-style images", ", ".join(f"{k} {v}" for k, v in sizes.items()), len(nih)
    )
    return RunInputs(prepare_model(config, run_dir), sft_path, rl_path, val_path, ood_path)


def prepare_inputs(config: RunConfig, run_dir: Path) -> RunInputs:
    data = config.data
    if data.phantoms is not None:
        return prepare_phantom_data(config, run_dir)
    if data.rl_manifest is None:
        raise UserError("data.rl_manifest is required (or data.phantoms for the embedded demo)")
    if config.sft is not None and data.sft_manifest is None:
        raise UserError("data.sft_manifest is required when sft is configured (set sft: null to skip SFT)")
    for key in ("sft_manifest", "rl_manifest", "val_manifest", "ood_manifest"):
        path = getattr(data, key)
        if path is not None and not Path(path).is_file():
            raise UserError(f"data.{key}: no file at {path}")
    return RunInputs(
        prepare_model(config, run_dir),
        data.sft_manifest,
        data.rl_manifest,
        data.val_manifest,
        data.ood_manifest,
    )
