"""Reports: tables mark the best per row, JSON round-trips, charts and predictions are written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from evaluation.records import (
    PredictionRecord,
    flatten_checkpoint_records,
    group_by_checkpoint,
    read_prediction_records,
    read_scored_predictions,
    write_prediction_records,
)
from evaluation.report import build_report, read_report
from evaluation.report_config import ReportConfig
from evaluation.report_files import write_report
from evaluation.report_markdown import render_markdown
from shared.errors import UserError
from shared.labels import CHEXPERT_LABELS, NIH9_LABELS

# Per checkpoint: chance of flipping each label, on (chexpert, nih). GRPO gains ID, loses OOD.
NOISE = {"base": (0.20, 0.20), "sft": (0.10, 0.10), "grpo": (0.03, 0.30)}
NEVER_SEEN = "Fracture"  # no chexpert image has it and no checkpoint predicts it: flagged


def make_records(n_images: int = 120) -> dict[str, dict[str, list[PredictionRecord]]]:
    rng = np.random.default_rng(0)
    truths = {
        "chexpert": [
            [label for label in CHEXPERT_LABELS if label != NEVER_SEEN and rng.random() < 0.2]
            for _ in range(n_images)
        ],
        "nih": [[label for label in NIH9_LABELS if rng.random() < 0.2] for _ in range(n_images)],
    }
    records: dict[str, dict[str, list[PredictionRecord]]] = {}
    for checkpoint, noises in NOISE.items():
        for (dataset, dataset_truths), noise in zip(truths.items(), noises, strict=True):
            rows = records.setdefault(checkpoint, {}).setdefault(dataset, [])
            for index, truth in enumerate(dataset_truths):
                valid = rng.random() > 0.05
                pred = [
                    label
                    for label in CHEXPERT_LABELS
                    if label != NEVER_SEEN and (label in truth) != (rng.random() < noise)
                ]
                rows.append(
                    PredictionRecord(
                        image_id=f"{dataset}-{index}",
                        dataset=dataset,
                        checkpoint=checkpoint,
                        text=f"<think>...</think><solution>{', '.join(pred)}</solution>"
                        if valid
                        else "garbled",
                        truth=truth,
                        pred=pred if valid else [],
                        valid=valid,
                        parse_status="ok" if valid else "no_solution_tag",
                    )
                )
    return records


CONFIG = ReportConfig(
    datasets={"chexpert": "chexpert14", "nih": "nih9"},
    in_distribution="chexpert",
    out_of_distribution="nih",
    n_resamples=200,
)


@pytest.fixture(scope="module")
def records():
    return make_records()


@pytest.fixture(scope="module")
def report(records):
    return build_report(records, CONFIG)


def table_rows(markdown: str, dataset: str) -> dict[str, list[str]]:
    section = markdown.split(f"## {dataset} (")[1].split("\n## ")[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| Label"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_tables_mark_the_best_checkpoint_per_row(report):
    markdown = render_markdown(report)
    for dataset, labels in (("chexpert", CHEXPERT_LABELS), ("nih", NIH9_LABELS)):
        rows = table_rows(markdown, dataset)
        assert set(labels) <= set(rows)
        for label in labels:
            f1s = [round(report.result(c, dataset).scores.per_label[label].f1, 3) for c in report.checkpoints]
            bold = [i for i, cell in enumerate(rows[label]) if cell.startswith("**")]
            if label == NEVER_SEEN:
                assert all(cell.endswith("†") for cell in rows[label])
            assert bold == [i for i, value in enumerate(f1s) if value == max(f1s)], label
        macro_bold = [i for i, cell in enumerate(rows["**Macro F1**"]) if cell.startswith("**")]
        macro = [report.result(c, dataset).scores.macro_f1 for c in report.checkpoints]
        assert macro_bold == [int(np.argmax(macro))]
        fail_bold = [i for i, cell in enumerate(rows["Fail rate"]) if cell.startswith("**")]
        fail = [round(report.result(c, dataset).scores.fail_rate, 3) for c in report.checkpoints]
        assert fail_bold == [i for i, value in enumerate(fail) if value == min(fail)]
    assert table_rows(markdown, "chexpert")["**Macro F1**"][2].startswith("**")  # grpo best ID
    assert table_rows(markdown, "nih")["**Macro F1**"][1].startswith("**")  # sft best OOD
    assert "† No image has this label" in markdown


def test_generalization_summary_shows_ood_loss_with_interval(report):
    assert report.baseline_checkpoint == "base"
    rows = {row.checkpoint: row for row in report.generalization}
    assert rows["base"].out_of_distribution_change is None
    grpo = rows["grpo"]
    assert grpo.in_distribution.estimate == report.result("grpo", "chexpert").scores.macro_f1
    assert grpo.in_distribution_change.relative.low > 0
    assert grpo.out_of_distribution_change.relative.high < 0
    expected = (grpo.out_of_distribution.estimate - rows["base"].out_of_distribution.estimate) / rows[
        "base"
    ].out_of_distribution.estimate
    assert grpo.out_of_distribution_change.relative.estimate == pytest.approx(expected)
    markdown = render_markdown(report)
    change = grpo.out_of_distribution_change.relative
    assert f"{change.estimate:+.1%} [{change.low:+.1%}, {change.high:+.1%}]" in markdown


def test_written_report_round_trips_and_charts_are_pngs(report, records, tmp_path):
    files = write_report(report, records, tmp_path / "report")
    assert read_report(files.json_path) == report
    assert json.loads(files.json_path.read_text())["results"]["sft"]["nih"]["scores"]["label_set"] == "nih9"
    assert files.markdown.read_text() == render_markdown(report, [chart.name for chart in files.charts])
    names = sorted(chart.name for chart in files.charts)
    assert names == ["id_vs_ood_macro_f1.png", "per_label_f1_chexpert.png", "per_label_f1_nih.png"]
    for chart in files.charts:
        data = chart.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    assert read_prediction_records(files.predictions) == flatten_checkpoint_records(records)
    assert group_by_checkpoint(read_prediction_records(files.predictions)) == records
    assert not list((tmp_path / "report").glob(".*.tmp"))


def test_report_with_one_dataset_and_chosen_baseline(records):
    config = ReportConfig(
        datasets={"nih": "nih9"}, in_distribution="nih", baseline_checkpoint="sft", n_resamples=50
    )
    only_nih = {checkpoint: {"nih": datasets["nih"]} for checkpoint, datasets in records.items()}
    report = build_report(only_nih, config)
    rows = {row.checkpoint: row for row in report.generalization}
    assert rows["sft"].in_distribution_change is None
    assert rows["base"].in_distribution_change.absolute.estimate < 0
    assert rows["grpo"].out_of_distribution is None
    summary = render_markdown(report).split("## Generalization")[1].split("\n## ")[0]
    assert "nih (ID)" in summary and "(OOD)" not in summary


def test_report_input_errors_name_the_problem(records):
    with pytest.raises(UserError, match="baseline checkpoint 'rl'"):
        build_report(records, CONFIG.model_copy(update={"baseline_checkpoint": "rl"}))
    with pytest.raises(UserError, match=r"dataset\(s\) \['nih'\] have no label set"):
        build_report(records, ReportConfig(datasets={"chexpert": "chexpert14"}, in_distribution="chexpert"))
    duplicated = {"base": {"nih": records["base"]["nih"] + records["base"]["nih"][:1]}}
    with pytest.raises(UserError, match=r"\['nih-0'\] appear more than once"):
        build_report(duplicated, CONFIG)
    with pytest.raises(UserError, match="at least one checkpoint"):
        build_report({}, CONFIG)
    with pytest.raises(ValidationError, match="unknown label set 'nih14'"):
        ReportConfig(datasets={"nih": "nih14"}, in_distribution="nih")
    with pytest.raises(ValidationError, match="both 'nih'"):
        ReportConfig(datasets={"nih": "nih9"}, in_distribution="nih", out_of_distribution="nih")
    with pytest.raises(ValidationError, match="out_of_distribution: 'mimic' is not one of the datasets"):
        ReportConfig(datasets={"nih": "nih9"}, in_distribution="nih", out_of_distribution="mimic")


def test_predictions_file_errors_name_file_and_line(tmp_path):
    path = tmp_path / "predictions.jsonl"
    good = '{"truth": ["Edema"], "pred": [], "valid": true, "anything": 1}\n'
    path.write_text(good + "\n" + '{"truth": ["Edema"], "pred": ["Pneumonitis"], "valid": true}\n')
    with pytest.raises(UserError, match=rf"{path}:3: pred: .*Pneumonitis"):
        read_scored_predictions(path)
    path.write_text(good + "{not json\n")
    with pytest.raises(UserError, match=rf"{path}:2: not valid JSON"):
        read_scored_predictions(path)
    path.write_text(good)
    assert read_scored_predictions(path)[0].truth == ["Edema"]
    with pytest.raises(UserError, match=rf"{path}:1: .*image_id"):  # a full record needs its audit fields
        read_prediction_records(path)
    path.write_text("\n")
    with pytest.raises(UserError, match="no predictions"):
        read_scored_predictions(path)
    with pytest.raises(UserError, match="not found"):
        read_scored_predictions(tmp_path / "missing.jsonl")


def test_written_predictions_keep_an_earlier_file_when_writing_fails(tmp_path):
    path = tmp_path / "predictions.jsonl"
    write_prediction_records(flatten_checkpoint_records(make_records(3)), path)
    before = path.read_text()

    def broken():
        yield from flatten_checkpoint_records(make_records(2))
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_prediction_records(broken(), path)
    assert path.read_text() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_report_command_rebuilds_the_report_from_its_predictions(records, tmp_path):
    predictions = write_prediction_records(
        flatten_checkpoint_records(records), tmp_path / "predictions.jsonl"
    )
    repo_root = str(Path(__file__).resolve().parents[3])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [repo_root, os.environ.get("PYTHONPATH")])),
    }
    command = [str(Path(sys.executable).parent / "cxr-rl"), "report", "--predictions", str(predictions)]
    command += ["--out", str(tmp_path / "out"), "--dataset", "chexpert=chexpert14", "--dataset", "nih=nih9"]
    command += ["--id", "chexpert", "--ood", "nih", "--bootstrap", "200"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert read_report(tmp_path / "out" / "report.json") == build_report(records, CONFIG)
    assert str(tmp_path / "out" / "report.md") in result.stdout.splitlines()
    bad = subprocess.run(
        [*command[:-6], "--dataset", "nih9", "--id", "nih"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "cxr-rl report: error: --dataset 'nih9': expected NAME=LABELS, e.g. nih=nih9"
    ]
