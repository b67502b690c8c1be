"""A run's inputs: the model and its data sets, checked before any training; for the embedded
default, a tiny MedGemma-architecture model and a phantom dataset built inside the run folder
(reused when already there).

The phantom generator draws the same synthetic patients as MIMIC-, CheXpert- and NIH-style copies,
each in its own institution style. The embedded run keeps them apart by patient:
- training (SFT, RL) and ID selection (val): MIMIC-style images of the official train and validate
  splits, drawn patient-disjoint and label-stratified like the paper's data;
- OOD selection (ood_val): the NIH-style images of the validation patients, minus NIH's official
  test split (a selection set never holds test rows);
- report sets, patients no other set holds (those of MIMIC's official test split): `mimic`
  (MIMIC style, in distribution) and two out-of-distribution sets, `chexpert` (CheXpert's style,
  the same 14 labels) and `nih` (NIH's style, scored on the nine categories NIH shares), as the
  paper reports CheXpert and NIH side by side.
"""

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from dataprep.loading import LoadOptions
from dataprep.mimic import load_mimic
from dataprep.phantoms.datasets import make_phantoms
from dataprep.split import draw_split, labelled
from deploy.config import EMBEDDED_MODEL, ReportSet, RunConfig
from deploy.run_sets import RunSet, check_run_sets
from shared.errors import UserError
from shared.manifest import ManifestRecord, read_manifest, write_manifest
from shared.prompts import registry_with
from tiny_models import build_tiny_model
from trainer.templates import SYNTHETIC_FORMATS, with_synthetic_targets

log = logging.getLogger("cxr_rl.driver")
SELECTION_RULES_NEEDING_OOD = ("out_of_distribution", "weighted")


@dataclass(frozen=True)
class RunInputs:
    sft_manifest: Path | None
    rl_manifest: Path
    val_manifest: Path | None
    ood_val_manifest: Path | None
    ood_label_set: str | None = None
    report_sets: list[ReportSet] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said in the run summary
    model: Path | None = None  # filled in once the sets have passed their checks


def prepare_model(config: RunConfig, run_dir: Path) -> Path:
    if config.model != EMBEDDED_MODEL:
        model = Path(config.model)
        if not (model / "config.json").is_file():
            raise UserError(f"model: no checkpoint at {model} (expected a folder with config.json)")
        return model

    return build_tiny_model("medgemma", run_dir / "model", seed=0)


def _phantom_patients(root: Path) -> dict[str, int]:
    """Image id in any of the three copies -> the phantom patient it shows."""
    patient_of: dict[str, int] = {}
    for line in (root / "phantom_truth.jsonl").read_text().splitlines():
        case = json.loads(line)
        for image_id in (*case["mimic_dicom_ids"].values(), case["chexpert_path"], case["nih_image"]):
            patient_of[image_id] = case["subject_index"]
    return patient_of


def _absolute(records: list[ManifestRecord], folder: Path) -> list[ManifestRecord]:
    return [
        record.model_copy(update={"image": str(record.image_path(folder).resolve())}) for record in records
    ]


def prepare_phantom_data(config: RunConfig, run_dir: Path) -> RunInputs:
    """Phantoms -> SFT / RL / validation (35 / 35 / 15 % of the MIMIC-style pool; the slack lets
    whole patients fall into one set), the OOD validation set and three report sets (see the
    module's text). SFT targets are synthetic (no teacher model in the demo)."""
    phantoms = config.data.phantoms
    manifests = run_dir / "data" / "manifests"
    names = ("sft", "rl", "val", "ood_val", "report_mimic", "report_chexpert", "report_nih")
    paths = {name: manifests / f"{name}.jsonl" for name in names}
    report_sets = [
        ReportSet(name="mimic", manifest=paths["report_mimic"], label_set="chexpert14", role="in_distribution"),
        ReportSet(name="chexpert", manifest=paths["report_chexpert"], label_set="chexpert14", role="out_of_distribution"),
        ReportSet(name="nih", manifest=paths["report_nih"], label_set="nih9", role="out_of_distribution"),
    ]  # fmt: skip
    if all(path.is_file() for path in paths.values()):
        return _phantom_inputs(paths, report_sets)
    root = run_dir / "data" / "phantoms"
    make_phantoms(root, n=phantoms.n, seed=phantoms.seed)
    copies = root / "manifests"
    mimic, unlabelled = labelled(load_mimic(root / "mimic", LoadOptions(progress=False)).records)
    pool = [record for record in mimic if record.split in ("train", "validate")]
    sizes = {"sft": int(len(pool) * 0.35), "rl": int(len(pool) * 0.35), "val": max(4, int(len(pool) * 0.15))}
    sets = draw_split(pool, sizes, seed=phantoms.seed)
    sft_format = _synthetic_format(config)
    write_manifest(with_synthetic_targets(sets["sft"], sft_format, seed=phantoms.seed), paths["sft"])
    write_manifest(sets["rl"], paths["rl"])
    write_manifest(sets["val"], paths["val"])
    patient = _phantom_patients(root)
    val_patients = {patient[record.id] for record in sets["val"]}
    report_patients = {patient[record.id] for record in mimic if record.split == "test"}
    nih, chexpert = (
        [r for path in sorted(copies.glob(f"{name}_*.jsonl")) for r in _absolute(read_manifest(path), copies)]
        for name in ("nih", "chexpert")
    )
    write_manifest([r for r in nih if patient[r.id] in val_patients and r.split != "test"], paths["ood_val"])
    write_manifest([r for r in mimic if r.split == "test"], paths["report_mimic"])
    write_manifest([r for r in chexpert if patient[r.id] in report_patients], paths["report_chexpert"])
    write_manifest([r for r in nih if patient[r.id] in report_patients], paths["report_nih"])
    log.info(
        "phantom data: %s; %d studies without a label left out; report sets from %d held-out patients",
        ", ".join(f"{k} {v}" for k, v in sizes.items()),
        len(unlabelled),
        len(report_patients),
    )
    return _phantom_inputs(paths, report_sets)


def _phantom_inputs(paths: dict[str, Path], report_sets: list[ReportSet]) -> RunInputs:
    """The sets as written; a set a small phantom draw left empty is left out, and said so."""
    notes, kept = [], []
    for report in report_sets:
        if read_manifest(report.manifest):
            kept.append(report)
        else:
            notes.append(
                f"report set {report.name}: no held-out phantom patient has such an image (raise data.phantoms.n)"
            )
    ood_val = paths["ood_val"] if read_manifest(paths["ood_val"]) else None
    if ood_val is None:
        notes.append(
            "no OOD selection set: no validation patient has an NIH-style image outside NIH's test split"
        )
    return RunInputs(paths["sft"], paths["rl"], paths["val"], ood_val, "nih9", kept, notes)


def _synthetic_format(config: RunConfig) -> str:
    """The writer of the demo's synthetic targets: the SFT format itself when it is a built-in one;
    for a user format, Free Reasoning's, or Only Label's when the format carries no rationale."""
    name = config.data.sft_format
    if name in SYNTHETIC_FORMATS:
        return name
    return (
        "free_reasoning"
        if registry_with(config.data.prompt_formats_file).get(name).rationale
        else "only_label"
    )


def _configured_data(config: RunConfig) -> RunInputs:
    data = config.data
    if data.rl_manifest is None:
        raise UserError("data.rl_manifest is required (or data.phantoms for the embedded demo)")
    if config.sft is not None and data.sft_manifest is None:
        raise UserError("data.sft_manifest is required when sft is configured (set sft: null to skip SFT)")
    files = {
        key: getattr(data, key) for key in ("sft_manifest", "rl_manifest", "val_manifest", "ood_val_manifest")
    }
    files |= {f"report_sets[{report.name}]": report.manifest for report in data.report_sets}
    for key, path in files.items():
        if path is not None and not Path(path).is_file():
            raise UserError(f"data.{key}: no file at {path}")
    notes = []
    if not data.report_sets:
        notes.append("no report sets (data.report_sets): the run ends without a final report on test sets")
    return RunInputs(
        data.sft_manifest, data.rl_manifest, data.val_manifest, data.ood_val_manifest,
        data.ood_label_set, list(data.report_sets), notes,
    )  # fmt: skip


def check_formats(config: RunConfig) -> None:
    """The SFT format and the GRPO prompt exist (built in, or in data.prompt_formats_file)."""
    prompts = registry_with(config.data.prompt_formats_file)
    prompts.get(config.grpo.prompt_format)
    if config.sft is not None:
        prompts.get(config.data.sft_format)


def check_inputs(config: RunConfig, inputs: RunInputs) -> None:
    """The selection rule's sets exist, and selection sets stay apart from report sets and test
    splits (deploy/run_sets.py)."""
    if config.evaluation.selection in SELECTION_RULES_NEEDING_OOD and inputs.ood_val_manifest is None:
        raise UserError(
            f"evaluation.selection {config.evaluation.selection!r} needs an OOD selection set: set "
            "data.ood_val_manifest (e.g. `cxr-rl data split --nih-root` nih_val.jsonl)"
        )
    run_sets = [
        RunSet(f"data.{key}", Path(path), kind)
        for key, path, kind in (
            ("sft_manifest", inputs.sft_manifest, "training"),
            ("rl_manifest", inputs.rl_manifest, "training"),
            ("val_manifest", inputs.val_manifest, "selection"),
            ("ood_val_manifest", inputs.ood_val_manifest, "selection"),
        )
        if path is not None
    ]
    run_sets += [
        RunSet(f"data.report_sets[{r.name}]", Path(r.manifest), "report") for r in inputs.report_sets
    ]
    check_run_sets(run_sets)


def prepare_inputs(config: RunConfig, run_dir: Path) -> RunInputs:
    """The run's data, checked before the model is built or loaded."""
    check_formats(config)
    data = config.data
    if data.phantoms is not None:
        keys = ("sft_manifest", "rl_manifest", "val_manifest", "ood_val_manifest", "report_sets")
        given = [key for key in keys if getattr(data, key)]
        if given:
            raise UserError(
                f"data.phantoms builds its own sets: remove data.{', data.'.join(given)} "
                "(or data.phantoms, to use your manifests)"
            )
        inputs = prepare_phantom_data(config, run_dir)
    else:
        inputs = _configured_data(config)
    check_inputs(config, inputs)
    return replace(inputs, model=prepare_model(config, run_dir))
