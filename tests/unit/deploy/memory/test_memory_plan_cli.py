"""`cxr-rl plan-memory` as a user runs it: a table, a last JSON line, and a one-line refusal."""

import json
import subprocess
import sys
from pathlib import Path

import yaml

from cxr_rl.cli import main

CONFIGS = Path(__file__).resolve().parents[4] / "deploy" / "configs"


def plan_memory_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cxr_rl.cli", "plan-memory", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_shipped_config_fits_and_ends_in_json():
    result = plan_memory_cli("--config", "medgemma-4b-a100", "--gpu", "a100-80gb")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    totals = json.loads(lines[-1])
    assert totals["fits"] is True and totals["gpu"] == "a100-80gb"
    assert (
        totals["rollout_gib"] < totals["rollout_share_gib"]
        and totals["trainer_gib"] < totals["trainer_share_gib"]
    )
    assert totals["rollout_share_gib"] + totals["trainer_share_gib"] < 79.2
    assert any(line.strip().startswith("base weights, bfloat16") for line in lines)


def test_oversized_batch_is_refused_in_one_line(tmp_path):
    config = yaml.safe_load((CONFIGS / "medgemma-4b-a100.yaml").read_text())
    config["grpo"]["sampling"].update(group_size=16, max_tokens=4096)
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(config))
    result = plan_memory_cli("--config", str(path))
    assert result.returncode == 1
    error_lines = [
        line for line in result.stderr.splitlines() if line.startswith("cxr-rl plan-memory: error:")
    ]
    assert len(error_lines) == 1 and "Traceback" not in result.stderr
    assert "trainer, GRPO step needs" in error_lines[0] and "GiB but its share is" in error_lines[0]
    assert json.loads(result.stdout.strip().splitlines()[-1])["fits"] is False


def test_cpu_demo_says_there_is_nothing_to_plan(capsys):
    assert main(["plan-memory", "--config", str(CONFIGS / "default.yaml")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("no GPU budget to plan")
    assert json.loads(out[-1])["fits"] is None


def test_bad_options_are_user_errors(capsys):
    assert main(["plan-memory", "--config", "medgemma-4b-a100", "--gpu", "v100"]) == 1
    assert "unknown GPU 'v100'" in capsys.readouterr().err
    assert main(["plan-memory", "--config", "no-such-config.yaml"]) == 1
    assert "config file not found" in capsys.readouterr().err
    assert main(["plan-memory", "--config", "medgemma-4b-a100", "--prompt-tokens", "0"]) == 1
    assert "--prompt-tokens must be at least 1" in capsys.readouterr().err
