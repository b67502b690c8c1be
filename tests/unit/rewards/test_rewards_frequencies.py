"""False-positive weights from real label frequencies: the shipped default is derived from the real
CheXpert train.csv that torchxrayvision ships, by a command anyone can rerun, and a user derives
their own from a label CSV or a training manifest."""

import csv
import importlib.util
import io
import json
from pathlib import Path

import pytest
import yaml

from cxr_rl.cli import main
from rewards.label_frequencies import (
    CHEXPERT_LABEL_FREQUENCIES,
    frequencies_from_csv,
    label_frequencies,
    torchxrayvision_chexpert_csv,
)
from rewards.nuanced import NuancedReward, NuancedRewardConfig
from shared.labels import CHEXPERT_LABELS

CM, ED, NF, PTX, SD = "Cardiomegaly", "Edema", "No Finding", "Pneumothorax", "Support Devices"


def cli(monkeypatch, capsys, argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def chexpert_csv(path: Path, rows: list[tuple[str, dict[str, str]]]) -> Path:
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        for number, (view, cells) in enumerate(rows):
            writer.writerow(
                [
                    f"p/{number}.jpg",
                    "F",
                    "60",
                    view,
                    "AP",
                    *(cells.get(label, "") for label in CHEXPERT_LABELS),
                ]
            )
    return path


def test_default_frequencies_are_chexperts_real_shares() -> None:
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None:
        pytest.skip("torchxrayvision (a dev dependency) is not installed")
    table = frequencies_from_csv(torchxrayvision_chexpert_csv())
    assert table.images == 191_027  # CheXpert's frontal training images
    assert table.frequencies == CHEXPERT_LABEL_FREQUENCIES  # the committed default is reproducible
    assert NuancedRewardConfig().label_frequencies == CHEXPERT_LABEL_FREQUENCIES
    # Support Devices is CheXpert's most frequent label (56.1% of frontal images), No Finding 8.9%.
    assert max(CHEXPERT_LABEL_FREQUENCIES, key=CHEXPERT_LABEL_FREQUENCIES.get) == SD
    assert CHEXPERT_LABEL_FREQUENCIES[SD] == 0.561 and CHEXPERT_LABEL_FREQUENCIES[NF] == 0.0889


def test_false_positive_costs_follow_the_real_shares() -> None:
    reward = NuancedReward()
    # 5 + 15·f/max f with max f = 0.561 (Support Devices).
    assert reward.false_positive_cost[SD] == pytest.approx(20.0)
    assert reward.false_positive_cost[NF] == pytest.approx(5 + 15 * 0.0889 / 0.561)  # 7.377
    assert reward.false_positive_cost[PTX] == pytest.approx(5 + 15 * 0.0926 / 0.561)  # 7.476


def test_csv_frontal_images_positive_only(tmp_path: Path) -> None:
    path = chexpert_csv(
        tmp_path / "train.csv",
        [
            ("Frontal", {NF: "1.0"}),
            ("Frontal", {CM: "1.0", ED: "-1.0"}),  # uncertain Edema counts as negative (U-Zeros)
            ("Frontal", {CM: "1.0", ED: "1.0", SD: "1.0"}),
            ("Lateral", {CM: "1.0", PTX: "1.0"}),  # lateral views are not counted
            ("Frontal", {PTX: "0.0"}),  # no positive label
        ],
    )
    table = frequencies_from_csv(path)
    # 4 frontal images: Cardiomegaly 2/4, No Finding, Edema, Support Devices 1/4 each; labels seen
    # on none get half a count, 0.5/4 = 0.125; one image in four names no label.
    assert table.images == 4 and table.no_positive == 0.25
    assert table.frequencies[CM] == 0.5
    assert (table.frequencies[NF], table.frequencies[ED], table.frequencies[SD]) == (0.25, 0.25, 0.25)
    assert table.frequencies[PTX] == 0.125


def test_csv_without_view_column_counts_every_row(tmp_path: Path) -> None:
    # MIMIC-CXR's mimic-cxr-2.0.0-chexpert.csv: one row per study, no view column.
    path = tmp_path / "mimic-cxr-2.0.0-chexpert.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["subject_id", "study_id", *CHEXPERT_LABELS])
        writer.writerow(["1", "10", *("1.0" if label == ED else "" for label in CHEXPERT_LABELS)])
        writer.writerow(["1", "11", *("1.0" if label in (ED, CM) else "" for label in CHEXPERT_LABELS)])
    table = frequencies_from_csv(path)
    assert table.images == 2 and table.frequencies[ED] == 1.0 and table.frequencies[CM] == 0.5


def test_command_from_a_manifest_gives_a_reward_config(monkeypatch, capsys, tmp_path: Path) -> None:
    manifest = tmp_path / "rl.jsonl"
    labels = [[NF], [CM, ED], [CM], [CM, SD]]
    manifest.write_text(
        "".join(
            json.dumps({"id": f"x{i}", "image": f"{i}.png", "labels": ls}) + "\n"
            for i, ls in enumerate(labels)
        )
    )
    out_file = tmp_path / "nuanced.yaml"
    code, _, err = cli(
        monkeypatch, capsys, ["reward", "frequencies", "--manifest", str(manifest), "--out", str(out_file)]
    )
    assert code == 0, err
    assert "4 images" in err
    frequencies = yaml.safe_load(out_file.read_text())["label_frequencies"]
    # Cardiomegaly 3/4, the others 1/4, unseen labels 0.5/4.
    assert frequencies[CM] == 0.75 and frequencies[NF] == 0.25 and frequencies[PTX] == 0.125
    assert frequencies == label_frequencies(labels)
    # The file is a nuanced reward config as it stands: a wrong Cardiomegaly now costs the most, 20;
    # a wrong Edema 5 + 15·0.25/0.75 = 10.
    line = json.dumps(
        {"text": "<think>x</think><solution>Edema</solution>", "labels": [PTX], "n_tokens": 300}
    )
    code, out, _ = cli(
        monkeypatch, capsys, ["reward", "--name", "nuanced", "--config", str(out_file)], line + "\n"
    )
    assert code == 0 and json.loads(out)["components"]["false_positives"] == pytest.approx(-10.0)


def test_command_prints_yaml_without_out(monkeypatch, capsys, tmp_path: Path) -> None:
    path = chexpert_csv(tmp_path / "train.csv", [("Frontal", {ED: "1.0"}), ("Frontal", {CM: "1.0"})])
    code, out, _ = cli(monkeypatch, capsys, ["reward", "frequencies", "--csv", str(path)])
    assert code == 0 and yaml.safe_load(out)["label_frequencies"][ED] == 0.5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--csv", "/nonexistent/train.csv"], "label CSV not found: /nonexistent/train.csv"),
        (["--manifest", "/nonexistent/rl.jsonl"], "/nonexistent/rl.jsonl"),
    ],
)
def test_bad_sources_are_one_clear_line(monkeypatch, capsys, argv, message) -> None:
    code, _, err = cli(monkeypatch, capsys, ["reward", "frequencies", *argv])
    assert code == 1 and err.count("\n") == 1 and message in err, err


def test_csv_without_label_columns(monkeypatch, capsys, tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("Image Index,Finding Labels\na.png,Effusion\n")
    code, _, err = cli(monkeypatch, capsys, ["reward", "frequencies", "--csv", str(path)])
    assert code == 1 and "no CheXpert label columns" in err and "other.csv" in err, err


def test_empty_sources(monkeypatch, capsys, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, _, err = cli(monkeypatch, capsys, ["reward", "frequencies", "--manifest", str(empty)])
    assert code == 1 and "no records" in err, err
    only_lateral = chexpert_csv(tmp_path / "lateral.csv", [("Lateral", {ED: "1.0"})])
    code, _, err = cli(monkeypatch, capsys, ["reward", "frequencies", "--csv", str(only_lateral)])
    assert code == 1 and "no frontal rows" in err, err
