"""Training-time validation on the selection sets: a seeded subset stratified by label, the same
images at every evaluation and after a resume; the run summary shows each evaluated step with its
interval, the choice of each rule with the tie rule, and writes summary.json."""

import json
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from deploy.config import EvaluationSettings, ReportSet, RunConfig
from deploy.embedded import RunInputs
from deploy.final_report import checkpoint_labels
from deploy.run_outcome import RunOutcome
from deploy.run_summary import write_run_summary
from deploy.validation import ID_SET, OOD_SET, TrainingValidation, selection_subset
from evaluation.records import PredictionRecord, write_prediction_records
from shared.labels import CHEXPERT_LABELS
from shared.manifest import ManifestRecord, read_manifest, write_manifest

RARE = "Pleural Other"


def manifest(path, n: int = 300, seed: int = 0, source: str = "mimic"):
    """n images; one label in twenty-five is the rare one, and it sits at the end of the file."""
    rng = np.random.default_rng(seed)
    common = [label for label in CHEXPERT_LABELS if label not in (RARE, "No Finding")]
    records = []
    for index in range(n):
        labels = [label for label in common if rng.random() < 0.2] or ["No Finding"]
        if index >= n - n // 25:
            labels = [RARE]
        records.append(
            ManifestRecord(
                id=f"{source}{index:04d}", image=f"/x/{index}.png", labels=labels, source=source,
                split="validate", metadata={"subject_id": str(index // 2)},
            )
        )  # fmt: skip
    return write_manifest(records, path)


def test_the_subset_is_seeded_stratified_and_not_the_first_rows(tmp_path):
    source = manifest(tmp_path / "val.jsonl")
    path, subset = selection_subset(source, 40, seed=0, out=tmp_path / "a" / "val_subset.jsonl")
    assert len(subset) == 40 and read_manifest(path) == subset
    assert any(RARE in record.labels for record in subset)  # the first 40 rows hold none
    pool = Counter(label for record in read_manifest(source) for label in record.labels)
    drawn = Counter(label for record in subset for label in record.labels)
    assert set(drawn) == set(pool)  # every label of the set is in its subset
    again = selection_subset(source, 40, seed=0, out=tmp_path / "b" / "val_subset.jsonl")[1]
    other = selection_subset(source, 40, seed=1, out=tmp_path / "c" / "val_subset.jsonl")[1]
    assert [r.id for r in again] == [r.id for r in subset] != [r.id for r in other]
    whole = selection_subset(source, None, seed=0, out=tmp_path / "d" / "val_subset.jsonl")[1]
    assert len(whole) == 300


def test_every_evaluation_and_a_resumed_run_use_the_same_images(tmp_path):
    val, ood = manifest(tmp_path / "val.jsonl"), manifest(tmp_path / "ood.jsonl", seed=1, source="nih")
    settings = EvaluationSettings(max_images=32, subset_seed=5)
    first = TrainingValidation(tmp_path / "run", settings, val, ood, "chexpert14", "only_label")
    write_manifest(read_manifest(val)[:10], val)  # the source changes: a resume keeps the run's subset
    resumed = TrainingValidation(tmp_path / "run", settings, val, ood, "chexpert14", "only_label")
    assert resumed.digests == first.digests and len(first.digests) == 2
    assert resumed.datasets == first.datasets
    assert read_manifest(first.datasets[ID_SET][0]) == read_manifest(resumed.datasets[ID_SET][0])


def fake_step(validation: TrainingValidation, step: int, flip: float) -> None:
    """A step's answers written as the driver writes them: the truth with cells flipped."""
    rng = np.random.default_rng(step)
    rows, point = [], {"step": step, "version": step, "id_fail_rate": 0.0}
    for dataset, (subset, _) in validation.datasets.items():
        for record in read_manifest(subset):
            pred = [label for label in CHEXPERT_LABELS if (label in record.labels) != (rng.random() < flip)]
            rows.append(
                PredictionRecord(
                    image_id=record.id, dataset=dataset, checkpoint=f"policy:{step}", text="", truth=record.labels,
                    pred=pred, valid=True, parse_status="ok",
                )
            )  # fmt: skip
        prefix = "id" if dataset == ID_SET else "ood"
        point |= {f"{prefix}_macro_f1": 0.5 - flip, f"{prefix}_ci": [0.4 - flip, 0.6 - flip]}
    write_prediction_records(rows, validation._step_file(step))
    point |= {"skill_over_baseline": 0.2, "skill_over_baseline_ci": [0.1, 0.3], "distinct_answer_sets": 7}
    validation.points.append(point)


@pytest.fixture
def run(tmp_path):
    val, ood = manifest(tmp_path / "val.jsonl"), manifest(tmp_path / "ood.jsonl", seed=1, source="nih")
    validation = TrainingValidation(tmp_path / "run", EvaluationSettings(max_images=64), val, ood, None, "x")
    for step, flip in ((0, 0.2), (4, 0.2), (8, 0.02)):
        fake_step(validation, step, flip)
    inputs = RunInputs(None, tmp_path / "rl.jsonl", val, ood, None, [
        ReportSet(name="chexpert", manifest=tmp_path / "c.jsonl", role="out_of_distribution"),
        ReportSet(name="nih", manifest=tmp_path / "n.jsonl", role="out_of_distribution"),
    ])  # fmt: skip
    grpo = SimpleNamespace(model="m", sft_adapter="a", max_steps=8, adapter_name="policy")
    outcome = RunOutcome(grpo_config=grpo, validation=validation, final_step=8, inputs=inputs, wall_s=12.5)
    return tmp_path / "run", validation, outcome


def test_summary_shows_each_step_with_its_interval_and_the_choice_of_each_rule(run):
    run_dir, validation, outcome = run
    selection = validation.selection()
    assert selection["chosen"]["step"] == 8 and selection["chosen"]["tied_steps"] == [8]
    assert set(selection["by_rule"]) == {"in_distribution", "out_of_distribution", "weighted"}
    write_run_summary(run_dir, RunConfig(), outcome, [], selection, None, {"grpo_s": 10.0}, [])
    markdown = (run_dir / "summary.md").read_text()
    for step, flip in ((0, 0.2), (4, 0.2), (8, 0.02)):
        assert f"| {step} | {0.5 - flip:.3f} [{0.4 - flip:.3f}, {0.6 - flip:.3f}] |" in markdown
    assert "Tie rule: earliest of the steps not significantly below the best" in markdown
    assert "2 out-of-distribution report sets (chexpert, nih)" in markdown
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["skill_over_baseline"] == 0.2 and summary["skill_over_baseline_ci"] == [0.1, 0.3]
    assert summary["distinct_answer_sets"] == 7 and summary["wall_s"] == 12.5
    first = summary["validation"][0]
    assert {"id_ci", "id_macro_f1", "ood_ci", "ood_macro_f1", "step"} <= set(first) and first["step"] == 0
    assert {"skill_over_baseline", "skill_over_baseline_ci", "distinct_answer_sets"} <= set(first)
    assert "## What was learned" in markdown
    assert first["id_ci"] == pytest.approx([0.2, 0.4]) and first["ood_macro_f1"] == pytest.approx(0.3)


def test_one_ood_report_set_is_said_plainly(run):
    run_dir, validation, outcome = run
    outcome.inputs = RunInputs(None, run_dir, None, None, None, outcome.inputs.report_sets[1:])
    write_run_summary(run_dir, RunConfig(), outcome, [], validation.selection(), None, {}, [])
    assert (
        "one out-of-distribution report set (nih); the paper reports two"
        in (run_dir / "summary.md").read_text()
    )


def test_report_columns_name_every_role_of_a_step():
    assert checkpoint_labels(4, 8) == {0: "SFT (step 0)", 4: "chosen (step 4)", 8: "last (step 8)"}
    assert checkpoint_labels(8, 8) == {0: "SFT (step 0)", 8: "chosen = last (step 8)"}
    assert checkpoint_labels(0, 8) == {0: "SFT = chosen (step 0)", 8: "last (step 8)"}
    assert OOD_SET == "ood_val"
