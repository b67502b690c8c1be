"""Evaluation while GRPO runs: the validation (in-distribution) and OOD sets through the same
evaluator the `cxr-rl eval` command uses, every K steps; checkpoint selection and the early warning
that OOD macro-F1 falls while ID rises."""

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from deploy.config import EvaluationSettings
from evaluation.selection import (
    EarlyWarningConfig,
    SelectionConfig,
    ValidationPoint,
    choices_by_rule,
    ood_early_warning,
    select_checkpoint,
)
from shared.manifest import read_manifest, write_manifest
from shared.schemas import AdapterSelector

log = logging.getLogger("cxr_rl.driver")


class TrainingValidation:
    def __init__(
        self,
        run_dir: Path,
        settings: EvaluationSettings,
        val_manifest: Path | None,
        ood_manifest: Path | None,
        ood_label_set: str,
        prompt_format: str,
    ):
        self.folder = run_dir / "evaluation"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.prompt_format = prompt_format
        self.token: str | None = None  # the replicas' API token, when the run gives them one
        self.datasets: dict[str, tuple[str, str | None]] = {}
        if val_manifest is not None:
            self.datasets["val"] = (str(self._subset(val_manifest, "val")), None)
        if ood_manifest is not None:
            self.datasets["ood"] = (str(self._subset(ood_manifest, "ood")), ood_label_set)
        self.points_path = self.folder / "points.jsonl"
        self.points: list[dict[str, Any]] = []
        if self.points_path.is_file():
            self.points = [
                json.loads(line) for line in self.points_path.read_text().splitlines() if line.strip()
            ]

    @property
    def enabled(self) -> bool:
        return "val" in self.datasets

    def _subset(self, manifest: Path, name: str) -> Path:
        records = read_manifest(manifest)
        records = [
            r.model_copy(update={"image": str(r.image_path(Path(manifest).parent).resolve())})
            for r in records
        ]
        limit = self.settings.max_images
        return write_manifest(records[:limit] if limit else records, self.folder / f"{name}_subset.jsonl")

    def eval_settings(self) -> Any:
        from evaluation.runner import EvalSampling, EvalSettings

        return EvalSettings(
            sampling=EvalSampling(max_tokens=self.settings.max_tokens, prompt_format=self.prompt_format),
            in_distribution="val",
            out_of_distribution="ood" if "ood" in self.datasets else None,
            progress=False,
        )

    def evaluate(
        self, url: str, step: int, adapter: AdapterSelector, adapter_folder: Path | None
    ) -> dict[str, Any]:
        """Score the version live after `step` optimizer steps; keep its adapter for the final report."""
        from evaluation.runner import evaluate_checkpoints

        outcome = evaluate_checkpoints(url, self.datasets, [adapter], self.eval_settings(), token=self.token)
        name = outcome.checkpoints[0]
        point = {"step": step, "version": adapter.version, "id_macro_f1": outcome.macro_f1(name, "val")}
        point["id_fail_rate"] = outcome.scores[name]["val"].fail_rate
        if "ood" in self.datasets:
            point["ood_macro_f1"] = outcome.macro_f1(name, "ood")
            point["ood_fail_rate"] = outcome.scores[name]["ood"].fail_rate
        if adapter_folder is not None:
            kept = self.folder / "adapters" / f"step-{step:06d}"
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(adapter_folder, kept)
            point["adapter"] = str(kept)
        self.points = [p for p in self.points if p["step"] != step] + [point]
        self.points_path.write_text("".join(json.dumps(p) + "\n" for p in self.points))
        warning = self.early_warning()
        if warning:
            log.warning("early warning: %s", warning)
            point["early_warning"] = warning
        return point

    def history(self) -> list[ValidationPoint]:
        return [
            ValidationPoint(
                step=p["step"],
                id_macro_f1=p["id_macro_f1"],
                ood_macro_f1=p.get("ood_macro_f1", p["id_macro_f1"]),
            )
            for p in sorted(self.points, key=lambda p: p["step"])
        ]

    def early_warning(self) -> str | None:
        if self.settings.max_ood_drop is None or "ood" not in self.datasets or len(self.points) < 2:
            return None
        return ood_early_warning(self.history(), EarlyWarningConfig(max_ood_drop=self.settings.max_ood_drop))

    def selection(self) -> dict[str, Any]:
        """The configured rule's choice and what the other rules would have chosen."""
        history = self.history()
        if not history:
            return {}
        chosen = select_checkpoint(
            history, SelectionConfig(rule=self.settings.selection, ood_weight=self.settings.ood_weight)
        )
        others = choices_by_rule(history, self.settings.ood_weight)
        return {
            "rule": self.settings.selection,
            "chosen": _as_dict(chosen),
            "by_rule": {k: _as_dict(v) for k, v in others.items()},
        }


def _as_dict(point: Any) -> Any:
    return point.model_dump() if hasattr(point, "model_dump") else point
