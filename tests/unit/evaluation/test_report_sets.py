"""Reports over any number of sets, each with its label set, laid out like the paper's Tables 5 and
6 (labels in the paper's row order, then the overall macro average) plus an ID-vs-OOD summary whose
OOD column averages every OOD set (the paper reports CheXpert and NIH side by side)."""

import numpy as np
import pytest

from evaluation.bootstrap import paired_label_matrices, resampled_macro_f1
from evaluation.report import build_report
from evaluation.report_config import ReportConfig
from evaluation.report_files import write_report
from evaluation.report_markdown import render_markdown
from tests.unit.evaluation.test_report import make_records, table_rows

# Row order of the paper's Table 5 (CheXpert, 14 labels) and Table 6 (NIH, 9 categories).
TABLE_5_ROWS = [
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
]  # fmt: skip
TABLE_6_ROWS = [
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Lung Lesion", "No Finding", "Pleural Other",
    "Pneumonia", "Pneumothorax",
]  # fmt: skip


@pytest.fixture(scope="module")
def three_sets():
    """ID: a MIMIC-style test set; OOD: CheXpert (14 labels) and NIH (9): the demo's layout."""
    records = make_records(80)
    for datasets in records.values():
        datasets["mimic"] = [
            record.model_copy(update={"dataset": "mimic", "image_id": f"mimic-{i}"})
            for i, record in enumerate(datasets["chexpert"])
        ]
    config = ReportConfig(
        datasets={"mimic": "chexpert14", "chexpert": "chexpert14", "nih": "nih9"},
        in_distribution=["mimic"],
        out_of_distribution=["chexpert", "nih"],
        baseline_checkpoint="sft",
        n_resamples=200,
    )
    return records, config, build_report(records, config)


def row_labels(markdown: str, dataset: str) -> list[str]:
    section = markdown.split(f"## {dataset} (")[1].split("\n## ")[0]
    return [
        line.strip("|").split("|")[0].strip()
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith("| Label")
    ]


def test_tables_list_labels_in_the_papers_order_then_the_macro_average(three_sets):
    _, _, report = three_sets
    markdown = render_markdown(report)
    assert row_labels(markdown, "chexpert")[: len(TABLE_5_ROWS) + 1] == TABLE_5_ROWS + ["**Macro F1**"]
    assert row_labels(markdown, "nih")[: len(TABLE_6_ROWS) + 1] == TABLE_6_ROWS + ["**Macro F1**"]
    assert set(table_rows(markdown, "mimic")) >= set(TABLE_5_ROWS)


def test_the_ood_summary_averages_every_ood_set(three_sets):
    records, config, report = three_sets
    rows = {row.checkpoint: row for row in report.generalization}
    for checkpoint, row in rows.items():
        ood = [report.result(checkpoint, name).scores.macro_f1 for name in ("chexpert", "nih")]
        assert row.out_of_distribution.estimate == pytest.approx(np.mean(ood))
        assert row.in_distribution.estimate == pytest.approx(
            report.result(checkpoint, "mimic").scores.macro_f1
        )
        assert row.out_of_distribution.low < row.out_of_distribution.estimate < row.out_of_distribution.high
    grpo = rows["grpo"].out_of_distribution_change
    assert grpo.candidate - grpo.baseline == pytest.approx(
        rows["grpo"].out_of_distribution.estimate - rows["sft"].out_of_distribution.estimate
    )
    # The change's interval is the mean of the per-set paired bootstraps (sets resampled apart).
    per_set = []
    for index, name in enumerate(("chexpert", "nih")):
        pair = paired_label_matrices(records["sft"][name], records["grpo"][name], config.datasets[name])
        _, samples = resampled_macro_f1(list(pair), config.n_resamples, config.seed + index)
        per_set.append(samples[1] - samples[0])
    difference = np.mean(per_set, axis=0)
    assert grpo.absolute.low == pytest.approx(np.percentile(difference, 2.5))


def test_markdown_and_chart_show_every_set_with_its_role(three_sets, tmp_path):
    records, _, report = three_sets
    markdown = render_markdown(report)
    summary = markdown.split("## Generalization")[1].split("\n## ")[0]
    header = summary.strip().splitlines()[2]
    for column in ("mimic (ID)", "chexpert (OOD)", "nih (OOD)", "OOD mean", "OOD change vs sft"):
        assert column in header
    files = write_report(report, records, tmp_path)
    assert sorted(chart.name for chart in files.charts) == [
        "id_vs_ood_macro_f1.png", "per_label_f1_chexpert.png", "per_label_f1_mimic.png", "per_label_f1_nih.png",
    ]  # fmt: skip


def test_a_role_given_as_one_name_still_reads():
    config = ReportConfig(
        datasets={"a": "chexpert14", "b": "nih9"}, in_distribution="a", out_of_distribution="b"
    )
    assert (config.in_distribution, config.out_of_distribution) == (["a"], ["b"])


def test_eval_roles_can_name_every_set_out_of_distribution():
    """`cxr-rl eval --ood chexpert --ood nih`: the paper's two tables, no ID set named."""
    from types import SimpleNamespace

    from evaluation.runner import EvalSettings, _roles

    datasets = {"chexpert": SimpleNamespace(label_set="chexpert14"), "nih": SimpleNamespace(label_set="nih9")}
    assert _roles(datasets, EvalSettings(out_of_distribution=["chexpert", "nih"])) == (
        [],
        ["chexpert", "nih"],
    )
    assert _roles(datasets, EvalSettings()) == (["chexpert"], ["nih"])
    config = ReportConfig(datasets={"chexpert": "chexpert14", "nih": "nih9"}, in_distribution=[],
                          out_of_distribution=["chexpert", "nih"])  # fmt: skip
    report = build_report({c: {n: rows for n, rows in d.items() if n in ("chexpert", "nih")}
                           for c, d in make_records(40).items()}, config.model_copy(update={"n_resamples": 100}))  # fmt: skip
    header = render_markdown(report).split("## Generalization")[1].strip().splitlines()[2]
    assert "chexpert (OOD)" in header and "nih (OOD)" in header and "(ID)" not in header
