"""The run config is checked whole before any work: a bad key anywhere is refused at load, naming its
path, and `cxr-rl train --check` prints the resolved config with each field's description."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy.config import RunConfig
from shared.config import load_config
from shared.errors import UserError

CONFIGS = Path(__file__).resolve().parents[3] / "deploy" / "configs"
SHIPPED = sorted(CONFIGS.glob("*.yaml"))
RUN_CONFIGS = [path for path in SHIPPED if not path.name.startswith("sft_")]


def write_config(tmp_path: Path, changes: dict) -> Path:
    data = yaml.safe_load((CONFIGS / "default.yaml").read_text())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        section = data
        for key in parents:
            section = section.setdefault(key, {})
        section[leaf] = value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("grpo.sampling.temprature", 0.7),
        ("grpo.loss.betta", 0.1),
        ("sft.training.learning_rat", 1e-4),
        ("rollout.engine.max_model_length", 1024),
        ("reward.spek", "hard"),
    ],
)
def test_a_misspelt_key_anywhere_is_refused_at_load_naming_its_path(tmp_path, dotted, value):
    path = write_config(tmp_path, {dotted: value})
    with pytest.raises(UserError, match=dotted.replace(".", r"\.")):
        load_config(path, RunConfig)


def test_a_bad_value_deep_in_a_section_is_refused_at_load(tmp_path):
    path = write_config(tmp_path, {"grpo.sampling.group_size": 1})
    with pytest.raises(UserError, match=r"grpo\.sampling\.group_size"):
        load_config(path, RunConfig)


def test_a_removed_option_is_refused_saying_what_replaced_it(tmp_path):
    path = write_config(tmp_path, {"data.ood_manifest": "nih.jsonl"})
    with pytest.raises(UserError, match=r"data: .*ood_manifest was split in two: ood_val_manifest"):
        load_config(path, RunConfig)


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_run_config_resolves_into_the_trainer_and_engine_configs(path):
    config = load_config(path, RunConfig)
    grpo = config.grpo_config("model", Path("rl.jsonl"), None)
    assert grpo.sampling == config.grpo.sampling and grpo.reward == config.reward
    engine = config.engine_config("model")
    assert engine.model == "model" and engine.max_model_len == config.rollout.engine.max_model_len
    if config.sft is not None:
        sft = config.sft_config("model", Path("sft.jsonl"), Path("out"))
        assert sft.training == config.sft.training and sft.data.sft_format == config.data.sft_format


def test_train_refuses_a_misspelt_key_before_building_anything(tmp_path):
    """The CLI path a user takes: exit 1 with the key named, and no model, data or Ray work done."""
    run_dir = tmp_path / "run"
    path = write_config(tmp_path, {"grpo.sampling.temprature": 0.7})
    result = subprocess.run(
        [sys.executable, "-m", "cxr_rl.cli", "train", "--config", str(path), "--run-dir", str(run_dir),
         "--address", "127.0.0.1:9"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "grpo.sampling.temprature" in result.stderr
    assert not run_dir.exists(), "the run folder was created before the config was checked"


def test_check_prints_the_resolved_config_with_field_descriptions(tmp_path):
    path = write_config(tmp_path, {"grpo.sampling.temperature": 0.7})
    result = subprocess.run(
        [sys.executable, "-m", "cxr_rl.cli", "train", "--config", str(path), "--check"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    temperature = next(line for line in lines if line.strip().startswith("temperature:"))
    assert "0.7" in temperature
    assert "# " in temperature, "each option carries its description"
    assert any(line.strip().startswith("group_size:") and "completions per X-ray" in line for line in lines)
