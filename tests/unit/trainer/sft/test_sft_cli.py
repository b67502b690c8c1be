"""`cxr-rl sft`: help that explains, configs validated with errors that name the key, the shipped
recipe configs parse to the paper's settings."""

from pathlib import Path

import pytest
import yaml

from cxr_rl.cli import main
from shared.config import load_config
from trainer.sft.config import SftConfig

CONFIGS = Path(__file__).resolve().parents[4] / "deploy" / "configs"


def test_help_explains_each_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sft", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--config", "--out", "--resume"):
        assert option in text
    assert "assistant" in text or "answer tokens" in text
    assert "checkpoint" in text


def write_config(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def minimal_config(tmp_path: Path) -> dict:
    return {
        "model": str(tmp_path / "model"),
        "data": {"train_manifest": "train.jsonl", "sft_format": "only_label"},
    }


def test_a_misspelt_key_is_a_one_line_error_naming_it(tmp_path, capsys):
    config = minimal_config(tmp_path)
    config["training"] = {"learnin_rate": 1e-4}
    code = main(["sft", "--config", str(write_config(tmp_path, config)), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip()
    assert code == 1
    assert len(error.splitlines()) == 1
    assert "training.learnin_rate" in error and "Traceback" not in error
    assert not (tmp_path / "out").exists()


def test_a_bad_value_names_the_key(tmp_path, capsys):
    config = minimal_config(tmp_path)
    config["lora"] = {"rank": 0}
    assert main(["sft", "--config", str(write_config(tmp_path, config)), "--out", str(tmp_path / "out")]) == 1
    assert "lora.rank" in capsys.readouterr().err


def test_a_missing_manifest_is_named(tmp_path, capsys):
    config = minimal_config(tmp_path)
    assert main(["sft", "--config", str(write_config(tmp_path, config)), "--out", str(tmp_path / "out")]) == 1
    assert "train.jsonl" in capsys.readouterr().err


def test_an_unknown_sft_format_lists_the_known_ones(tmp_path, capsys):
    config = minimal_config(tmp_path)
    config["data"]["sft_format"] = "reasoning_z"
    assert main(["sft", "--config", str(write_config(tmp_path, config)), "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert "reasoning_z" in error and "only_label" in error


def test_no_output_folder_is_an_error(tmp_path, capsys):
    assert main(["sft", "--config", str(write_config(tmp_path, minimal_config(tmp_path)))]) == 1
    assert "--out" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["sft_medgemma.yaml", "sft_qwen2.5-vl.yaml"])
def test_shipped_configs_hold_the_papers_recipe(name):
    config = load_config(CONFIGS / name, SftConfig)
    assert (config.lora.rank, config.lora.alpha, config.lora.dropout) == (16, 32, 0.1)
    assert config.lora.target_modules().startswith(".*language_model")  # vision tower stays frozen
    training = config.training
    assert (training.learning_rate, training.weight_decay, training.warmup_ratio) == (5e-5, 0.01, 0.05)
    assert training.max_grad_norm == 5.0
    assert training.per_device_batch_size * training.gradient_accumulation_steps == 8
    assert (training.epochs, training.early_stopping_patience) == (6, 2)
    assert config.data.val_fraction == 0.1 and config.gradient_checkpointing
    assert (config.min_pixels, config.max_pixels) == (256 * 28 * 28, 512 * 28 * 28)
    assert SftConfig.model_validate({"model": "m", "data": config.data.model_dump()}).training == training
