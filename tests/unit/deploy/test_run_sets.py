"""Selection sets apart from report sets: `cxr-rl train` refuses, before any training and naming the
file, a config that selects a checkpoint on a test split or on a report set's images, on real NIH
and CheXpert rows and on a MIMIC-style copy; the sets `cxr-rl data split` writes pass."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy.config import RunConfig
from deploy.embedded import prepare_inputs
from shared.config import load_config
from shared.errors import UserError
from shared.manifest import read_manifest, write_manifest
from tests.real_rows import chexpert_copy, nih_copy
from tests.unit.dataprep.test_data_cli import cxr_rl

PROJECT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    """A MIMIC-style phantom copy and real NIH and CheXpert rows, through `cxr-rl data split`, plus
    whole-copy manifests (`cxr-rl data summary --manifest`) that still hold the test rows."""
    from dataprep.phantoms.datasets import make_phantoms

    root = tmp_path_factory.mktemp("copies")
    make_phantoms(root / "phantoms", n=160, seed=2, size=64)
    nih = nih_copy(root / "nih")
    chexpert = chexpert_copy(root / "c" / "chexpert", rows=400, test_rows=60)
    out = root / "splits"
    result = cxr_rl(
        "data", "split", "--mimic-root", str(root / "phantoms" / "mimic"), "--nih-root", str(nih),
        "--chexpert-root", str(chexpert), "--out", str(out), "--sft", "40", "--rl", "30", "--val", "20",
        "--external-val", "100",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name, fmt, copy in (("nih_all", "nih", nih), ("chexpert_all", "chexpert", chexpert)):
        summary = cxr_rl(
            "data", "summary", "--format", fmt, "--root", str(copy), "--manifest", str(out / f"{name}.jsonl")
        )
        assert summary.returncode == 0, summary.stderr
    targets = [
        r.model_copy(update={"target": "<think></think>\n<solution>x</solution>"})
        for r in read_manifest(out / "sft.jsonl")
    ]
    write_manifest(targets, out / "sft_traces.jsonl")
    return out


def write_config(tmp_path: Path, splits: Path, **data) -> Path:
    config = yaml.safe_load((PROJECT / "deploy" / "configs" / "medgemma-4b-a100.yaml").read_text())
    for key in ("sft_manifest", "rl_manifest", "val_manifest", "ood_val_manifest"):
        config["data"][key] = str(splits / Path(config["data"][key]).name)
    for report in config["data"]["report_sets"]:
        report["manifest"] = str(splits / Path(report["manifest"]).name)
    config["data"].update(data)
    config["run_dir"] = str(tmp_path / "run")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def train(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cxr_rl.cli", "train", "--config", str(config), "--address", "127.0.0.1:9"],
        capture_output=True, text=True, timeout=300, cwd=PROJECT,
    )  # fmt: skip


def test_the_shipped_layout_passes_the_checks(tmp_path, splits):
    config = load_config(write_config(tmp_path, splits), RunConfig)
    with pytest.raises(UserError, match="model: no checkpoint at /path/to/medgemma-4b-it"):
        prepare_inputs(config, tmp_path / "run")  # every set check passed; only the model is missing


def test_selecting_on_nih_test_rows_is_refused_naming_the_file(tmp_path, splits):
    result = train(write_config(tmp_path, splits, ood_val_manifest=str(splits / "nih_all.jsonl")))
    assert result.returncode == 1, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "data.ood_val_manifest" in message and "nih_all.jsonl" in message
    assert "NIH's official test split (test_list.txt)" in message
    assert not (tmp_path / "run" / "sft").exists() and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("key", "manifest", "expected"),
    [
        ("val_manifest", "chexpert_all.jsonl", "CheXpert's test split"),
        ("val_manifest", "mimic_test.jsonl", "MIMIC-CXR's official test split"),
        ("ood_val_manifest", "chexpert_test.jsonl", "CheXpert's test split"),
    ],
)
def test_selecting_on_any_official_test_split_is_refused(tmp_path, splits, key, manifest, expected):
    config = load_config(write_config(tmp_path, splits, **{key: str(splits / manifest)}), RunConfig)
    with pytest.raises(UserError, match=rf"data\.{key} \(.*{manifest}\) holds \d+ row\(s\) of {expected}"):
        prepare_inputs(config, tmp_path / "run")


def test_a_selection_set_sharing_images_with_a_report_set_is_refused(tmp_path, splits):
    val = read_manifest(splits / "val.jsonl")
    write_manifest(val, splits / "mimic_report.jsonl")  # a report set made of the validation images
    reports = [{"name": "mimic", "manifest": str(splits / "mimic_report.jsonl"), "role": "in_distribution"}]
    config = load_config(write_config(tmp_path, splits, report_sets=reports), RunConfig)
    with pytest.raises(
        UserError, match=r"data\.val_manifest .* and data\.report_sets\[mimic\] .* share 20 image"
    ):
        prepare_inputs(config, tmp_path / "run")


def test_training_on_a_report_set_is_refused(tmp_path, splits):
    config = load_config(
        write_config(tmp_path, splits, rl_manifest=str(splits / "nih_test.jsonl")), RunConfig
    )
    with pytest.raises(
        UserError, match=r"data\.rl_manifest .* and data\.report_sets\[nih\] .* a training set"
    ):
        prepare_inputs(config, tmp_path / "run")


def test_the_old_single_ood_key_says_what_replaced_it(tmp_path, splits):
    result = train(write_config(tmp_path, splits, ood_manifest="data/nih_test.jsonl"))
    assert result.returncode == 1 and "ood_val_manifest" in result.stderr and "report_sets" in result.stderr


def test_an_ood_selection_rule_without_an_ood_set_is_refused(tmp_path, splits):
    path = write_config(tmp_path, splits, ood_val_manifest=None)
    config = load_config(path, RunConfig).model_copy(deep=True)
    config.evaluation.selection = "weighted"
    with pytest.raises(UserError, match="needs an OOD selection set"):
        prepare_inputs(config, tmp_path / "run")
