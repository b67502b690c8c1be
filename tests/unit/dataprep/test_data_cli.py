"""The `cxr-rl make-phantoms`, `data summary` and `data split` commands, run as a user runs them:
in a subprocess, reading exit codes, stdout and stderr."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[3]
LOADER_DATA = PROJECT / "tests" / "data" / "loaders"


def cxr_rl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cxr_rl.cli", *args],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        timeout=300,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def phantom_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "phantoms"
    result = cxr_rl("make-phantoms", "--out", str(out), "--n", "40", "--seed", "2", "--size", "64")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["n"] == 40 and summary["images"]["nih"] == 40
    return out


def test_make_phantoms_n_zero_is_a_one_line_error(tmp_path):
    assert_one_line_error(
        cxr_rl("make-phantoms", "--out", str(tmp_path / "x"), "--n", "0"), "--n must be at least 1"
    )


def test_make_phantoms_unwritable_out_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert_one_line_error(
        cxr_rl("make-phantoms", "--out", str(blocker / "sub"), "--n", "3"), "cannot write to --out"
    )


@pytest.mark.parametrize("dataset_format", ["mimic", "chexpert", "nih"])
def test_data_summary_last_line_is_json(phantom_out, dataset_format):
    result = cxr_rl(
        "data", "summary", "--format", dataset_format, "--root", str(phantom_out / dataset_format)
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert {"images", "skipped", "prevalence"} <= set(summary)
    assert summary["images"] == 40
    assert sum(summary["prevalence"].values()) > 0
    assert "positives per label" in result.stdout  # the table comes first


def test_data_summary_uncertain_ones_counts_more_positives(phantom_out):
    zeros = json.loads(
        cxr_rl(
            "data", "summary", "--format", "mimic", "--root", str(phantom_out / "mimic")
        ).stdout.splitlines()[-1]
    )
    ones = json.loads(
        cxr_rl(
            "data",
            "summary",
            "--format",
            "mimic",
            "--root",
            str(phantom_out / "mimic"),
            "--uncertain",
            "ones",
        ).stdout.splitlines()[-1]
    )
    assert sum(ones["prevalence"].values()) == sum(zeros["prevalence"].values()) + sum(
        zeros["uncertain"].values()
    )


def test_data_summary_reports_and_strict_refuses_malformed_rows(tmp_path):
    root = tmp_path / "nih"
    shutil.copytree(LOADER_DATA / "nih", root)
    result = cxr_rl("data", "summary", "--format", "nih", "--root", str(root))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["images"] == 0 and summary["skipped"]["missing image"] == 5  # no images copied
    assert "Data_Entry_2017.csv:4: unknown label" in result.stdout
    strict = cxr_rl("data", "summary", "--format", "nih", "--root", str(root), "--strict")
    assert_one_line_error(strict, "Data_Entry_2017.csv:2: missing image: 00000001_000.png")


def test_data_summary_missing_root_is_a_one_line_error(tmp_path):
    assert_one_line_error(
        cxr_rl("data", "summary", "--format", "chexpert", "--root", str(tmp_path / "nowhere")),
        "is not a folder",
    )


def test_data_split_writes_three_manifests(phantom_out, tmp_path):
    out = tmp_path / "split"
    result = cxr_rl(
        "data",
        "split",
        "--mimic-root",
        str(phantom_out / "mimic"),
        "--out",
        str(out),
        "--sft",
        "12",
        "--rl",
        "8",
        "--val",
        "4",
        "--seed",
        "1",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])["mimic"]
    assert report["sizes"] == {"sft": 12, "rl": 8, "val": 4}
    assert json.loads((out / "split_report.json").read_text())["mimic"] == report
    assert [len((out / f"{name}.jsonl").read_text().splitlines()) for name in ("sft", "rl", "val")] == [
        12,
        8,
        4,
    ]


def test_data_split_asking_too_much_is_a_one_line_error(phantom_out, tmp_path):
    result = cxr_rl(
        "data",
        "split",
        "--mimic-root",
        str(phantom_out / "mimic"),
        "--out",
        str(tmp_path / "s"),
        "--sft",
        "2000",
    )
    assert_one_line_error(result, "but 3500 were asked for (sft 2000, rl 1000, val 500)", "without any label")
