"""Evaluation while GRPO runs, on the selection sets only: the in-distribution validation set and,
when the run has one, the out-of-distribution validation set, through the same evaluator `cxr-rl
eval` uses, every K steps. Checkpoint selection and the OOD early warning read these evaluations;
the report sets are never scored here (deploy/final_report.py scores them once, at the end).

Each selection set is scored on a subset drawn once per run: seeded, stratified by label (the
split's draw, so rare labels are present), of `evaluation.max_images` images, written to
`evaluation/<set>_subset.jsonl` and reused by every evaluation and by a resumed run. Every step's
answers are kept (`evaluation/steps/step-NNNNNN.jsonl`), so selection compares steps by a paired
bootstrap on the same images, and each step's macro-F1 comes with its interval.
"""

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from dataprep.split import draw_split
from deploy.config import EvaluationSettings
from evaluation.bootstrap import bootstrap_f1
from evaluation.datasets import infer_label_set
from evaluation.metrics import label_matrices
from evaluation.records import PredictionRecord, read_prediction_records, write_prediction_records
from evaluation.runner import EvalSampling, EvalSettings, evaluate_checkpoints
from evaluation.selection import SelectionConfig, StepEvaluation, choices_by_rule, ood_early_warning
from evaluation.skill import skill_over_shortcut
from shared.manifest import ManifestRecord, read_manifest, write_manifest
from shared.schemas import AdapterSelector

log = logging.getLogger("cxr_rl.driver")
ID_SET, OOD_SET = "val", "ood_val"


def selection_subset(
    manifest: Path, size: int | None, seed: int, out: Path
) -> tuple[Path, list[ManifestRecord]]:
    """The seeded, label-stratified subset of a selection set (all of it when `size` is None or
    larger), image paths absolute, ordered by id; an existing file is reused as it is."""
    if out.is_file():
        return out, read_manifest(out)

    records = [
        record.model_copy(update={"image": str(record.image_path(Path(manifest).parent).resolve())})
        for record in read_manifest(manifest)
    ]
    if size is not None and size < len(records):
        chosen = {record.id for record in draw_split(records, {"subset": size}, seed)["subset"]}
        records = [record for record in records if record.id in chosen]
    records = sorted(records, key=lambda record: record.id)
    return write_manifest(records, out), records


def subset_digest(records: list[ManifestRecord]) -> str:
    """A short fingerprint of which images a subset holds: equal at every step of a run."""
    return hashlib.sha256("\n".join(record.id for record in records).encode()).hexdigest()[:12]


class TrainingValidation:
    def __init__(
        self,
        run_dir: Path,
        settings: EvaluationSettings,
        val_manifest: Path | None,
        ood_val_manifest: Path | None,
        ood_label_set: str | None,
        prompt_format: str,
        train_manifest: Path | None = None,
    ):
        self.folder = run_dir / "evaluation"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.prompt_format = prompt_format
        self.train_manifest = train_manifest  # the shortcut baselines' label rates
        self.token: str | None = None  # the replicas' API token, when the run gives them one
        self.datasets: dict[str, tuple[str, str]] = {}  # name -> (subset manifest, label set)
        self.digests: dict[str, str] = {}
        for name, manifest, label_set in (
            (ID_SET, val_manifest, None),
            (OOD_SET, ood_val_manifest, ood_label_set),
        ):
            if manifest is None:
                continue
            path, records = selection_subset(
                manifest, settings.max_images, settings.subset_seed, self.folder / f"{name}_subset.jsonl"
            )
            self.datasets[name] = (str(path), label_set or infer_label_set(records, path))
            self.digests[name] = subset_digest(records)
        self.points_path = self.folder / "points.jsonl"
        self.points: list[dict[str, Any]] = []
        if self.points_path.is_file():
            self.points = [
                json.loads(line) for line in self.points_path.read_text().splitlines() if line.strip()
            ]

    @property
    def enabled(self) -> bool:
        return ID_SET in self.datasets

    @property
    def has_ood(self) -> bool:
        return OOD_SET in self.datasets

    def selection_config(self, rule: str | None = None) -> SelectionConfig:
        settings = self.settings
        return SelectionConfig(
            rule=rule or settings.selection,
            ood_weight=settings.ood_weight,
            level=settings.confidence,
            n_resamples=settings.bootstrap_resamples,
            seed=settings.subset_seed,
        )

    def eval_settings(self) -> Any:
        return EvalSettings(
            sampling=EvalSampling(max_tokens=self.settings.max_tokens, prompt_format=self.prompt_format),
            in_distribution=[ID_SET],
            out_of_distribution=[OOD_SET] if self.has_ood else [],
            train_manifest=self.train_manifest,
            progress=False,
        )

    def _step_file(self, step: int) -> Path:
        return self.folder / "steps" / f"step-{step:06d}.jsonl"

    def evaluate(
        self, url: str, step: int, adapter: AdapterSelector, adapter_folder: Path | None
    ) -> dict[str, Any]:
        """Score the version live after `step` optimizer steps on the selection subsets; keep its
        answers (for paired comparisons) and its adapter (for the final report)."""
        outcome = evaluate_checkpoints(url, self.datasets, [adapter], self.eval_settings(), token=self.token)
        name = outcome.checkpoints[0]
        records = outcome.records[name]
        write_prediction_records([r for rows in records.values() for r in rows], self._step_file(step))
        point: dict[str, Any] = {"step": step, "version": adapter.version}
        for prefix, dataset in (("id", ID_SET), ("ood", OOD_SET)):
            if dataset not in records:
                continue
            scores = outcome.scores[name][dataset]
            matrices = label_matrices(records[dataset], outcome.datasets[dataset])
            interval = bootstrap_f1(matrices, self.settings.bootstrap_resamples, self.settings.subset_seed,
                                    self.settings.confidence).macro_f1  # fmt: skip
            point |= {
                f"{prefix}_macro_f1": scores.macro_f1,
                f"{prefix}_ci": [interval.low, interval.high],
                f"{prefix}_fail_rate": scores.fail_rate,
                f"{prefix}_images": scores.n_images,
                f"{prefix}_subset": self.digests[dataset],
            }
        skill = skill_over_shortcut(
            records[ID_SET], self.datasets[ID_SET][1], outcome.baselines[ID_SET], name,
            self.settings.bootstrap_resamples, self.settings.subset_seed, self.settings.confidence,
        )  # fmt: skip
        point |= {
            "skill_over_baseline": skill.skill,
            "skill_over_baseline_ci": skill.ci,
            "best_shortcut": skill.best_shortcut,
            "distinct_answer_sets": skill.distinct_answer_sets,
        }
        if adapter_folder is not None:
            kept = self.folder / "adapters" / f"step-{step:06d}"
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(adapter_folder, kept)
            point["adapter"] = str(kept)
        self.points = [p for p in self.points if p["step"] != step] + [point]
        warning = ood_early_warning(self.history(), self.selection_config())
        if warning:
            log.warning("early warning: %s", warning)
            point["early_warning"] = warning
        self.points_path.write_text("".join(json.dumps(p) + "\n" for p in self.points))
        return point

    def history(self) -> list[StepEvaluation]:
        """Every evaluated step's answers as label matrices, rows aligned on image id."""
        history = []
        for point in sorted(self.points, key=lambda p: p["step"]):
            path = self._step_file(point["step"])
            if not path.is_file():
                continue
            by_dataset: dict[str, list[PredictionRecord]] = {}
            for record in read_prediction_records(path):
                by_dataset.setdefault(record.dataset, []).append(record)
            matrices = {
                dataset: label_matrices(sorted(rows, key=lambda r: r.image_id), self.datasets[dataset][1])
                for dataset, rows in by_dataset.items()
                if dataset in self.datasets
            }
            history.append(StepEvaluation(point["step"], matrices[ID_SET], matrices.get(OOD_SET)))
        return history

    def selection(self) -> dict[str, Any]:
        """The configured rule's choice, what every rule would have chosen, and the tie rule."""
        history = self.history()
        if not history:
            return {}
        by_rule = choices_by_rule(history, self.selection_config())
        if self.settings.selection not in by_rule:
            return {}
        points = {p["step"]: p for p in self.points}
        return {
            "rule": self.settings.selection,
            "chosen": by_rule[self.settings.selection].model_dump()
            | _scores(points, by_rule[self.settings.selection].step),
            "by_rule": {
                rule: choice.model_dump() | _scores(points, choice.step) for rule, choice in by_rule.items()
            },
            "level": self.settings.confidence,
            "n_resamples": self.settings.bootstrap_resamples,
        }


def _scores(points: dict[int, dict[str, Any]], step: int) -> dict[str, Any]:
    point = points.get(step, {})
    return {key: point.get(key) for key in ("id_macro_f1", "id_ci", "ood_macro_f1", "ood_ci")}
