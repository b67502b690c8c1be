"""`cxr-rl score` as a user runs it: a subprocess on a predictions JSONL."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.metrics import score_predictions
from evaluation.records import read_scored_predictions

REPO_ROOT = Path(__file__).resolve().parents[3]
CXR_RL = Path(sys.executable).parent / "cxr-rl"
SUMMARY_KEYS = {"micro_f1", "macro_f1", "micro_precision", "micro_recall", "fail_rate", "per_label_f1"}

LINES = [
    {"truth": ["Cardiomegaly", "Edema"], "pred": ["Cardiomegaly"], "valid": True, "image_id": "a"},
    {"truth": ["Edema"], "pred": ["Edema", "Pneumonia"], "valid": True},
    {
        "truth": ["No Finding"],
        "pred": ["No Finding"],
        "valid": True,
        "text": "<solution>No Finding</solution>",
    },
    {"truth": ["Cardiomegaly", "Pleural Effusion"], "pred": ["Cardiomegaly"], "valid": False},
]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    # The repository first on the path, so the command finds this checkout's packages even when the
    # editable install predates them.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run([str(CXR_RL), *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def predictions(tmp_path) -> Path:
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in LINES))
    return path


def test_last_line_is_json_with_the_metrics(predictions):
    result = run_cli("score", "--predictions", str(predictions), "--labels", "chexpert14")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert set(summary) >= SUMMARY_KEYS
    expected = score_predictions(read_scored_predictions(predictions), "chexpert14")
    # micro over chexpert14: TP 3, FP 1, FN 3 (the failed image's two labels and image 1's Edema)
    assert summary["micro_f1"] == pytest.approx(expected.micro_f1) == pytest.approx(6 / 10)
    assert summary["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0 + 1) / 14)
    assert summary["fail_rate"] == 0.25
    assert summary["per_label_f1"]["Cardiomegaly"] == pytest.approx(2 / 3)
    assert len(summary["per_label_f1"]) == 14 and "Fracture" in summary["flagged_labels"]
    assert any(line.startswith("Cardiomegaly") for line in lines[:-1])  # the table precedes it


def test_valid_only_nih9_and_bootstrap(predictions):
    command = ["score", "--predictions", str(predictions), "--labels", "nih9", "--valid-only",
               "--bootstrap", "300", "--seed", "4"]  # fmt: skip
    result = run_cli(*command)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary["per_label_f1"]) == {
        "No Finding", "Cardiomegaly", "Lung Lesion", "Edema", "Consolidation",
        "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Other",
    }  # fmt: skip
    assert summary["valid_only"] is True and summary["n_scored"] == 3 and summary["fail_rate"] == 0.25
    assert summary["micro_f1"] == pytest.approx(6 / 8)
    low, high = summary["macro_f1_ci"]
    assert low <= summary["macro_f1"] <= high
    assert summary["bootstrap"] == {"n_resamples": 300, "seed": 4, "level": 0.95}
    again = run_cli(*command)  # the same seed gives the same interval
    assert json.loads(again.stdout.strip().splitlines()[-1])["macro_f1_ci"] == [low, high]


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("{not json", ":3: not valid JSON"),
        ('{"truth": ["Edema"], "pred": ["Pneumonitis"], "valid": true}', ":3: pred: "),
        ('{"truth": ["Effusion"], "pred": [], "valid": true}', ":3: truth: "),
        ('{"truth": ["Edema"], "pred": []}', ":3: valid: Field required"),
        ('{"truth": "Edema", "pred": [], "valid": true}', ":3: truth: "),
    ],
)
def test_bad_lines_give_one_line_naming_file_and_line(tmp_path, bad_line, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(LINES[0]) + "\n\n" + bad_line + "\n" + json.dumps(LINES[1]) + "\n")
    result = run_cli("score", "--predictions", str(path), "--labels", "chexpert14")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"{path}{expected}" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--predictions", "{missing}", "--labels", "nih9"], "predictions file not found"),
        (["--predictions", "{good}", "--labels", "nih9", "--bootstrap", "-5"], "--bootstrap must be"),
    ],
)
def test_other_errors_are_one_line(tmp_path, predictions, args, expected):
    args = [a.format(missing=tmp_path / "nope.jsonl", good=predictions) for a in args]
    result = run_cli("score", *args)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert expected in result.stderr
