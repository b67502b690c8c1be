"""The rollout benchmark end to end on the tiny MedGemma, at the smallest size: every path runs,
the last line is the JSON the project's reports read, and nothing it started outlives it."""

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.processes import still_running

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_rollout_benchmark_measures_every_path_and_stops_what_it_started(tiny_medgemma, tmp_path):
    command = [
        sys.executable, str(ROOT / "benchmarks" / "rollout.py"), "--model", str(tiny_medgemma),
        "--work-dir", str(tmp_path), "--batch-sizes", "2", "--repeats", "1", "--n", "2",
        "--max-tokens", "8", "--swaps", "2", "--image-size", "128", "--openai-requests", "3",
        "--openai-rounds", "1",
    ]  # fmt: skip
    out_path, err_path = tmp_path / "bench.out", tmp_path / "bench.err"  # files: a full pipe would block it
    with out_path.open("w") as out, err_path.open("w") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err)
    descendants: dict[int, tuple[psutil.Process, str]] = {}
    while process.poll() is None:
        children: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):  # the benchmark ended while being looked at
            children = psutil.Process(process.pid).children(recursive=True)
        for child in children:
            with contextlib.suppress(psutil.Error):  # a child ended (or is a zombie) meanwhile
                cmdline = " ".join(child.cmdline())  # empty for a zombie: keep what it ran
                if cmdline:
                    descendants[child.pid] = (child, cmdline)  # latest: after fork, exec
        time.sleep(1)
    stdout = out_path.read_text()
    assert process.returncode == 0, err_path.read_text()[-3000:]

    line = json.loads(stdout.strip().splitlines()[-1])
    for key in ("http_tokens_per_s", "direct_tokens_per_s", "hf_tokens_per_s", "lora_tokens_per_s"):
        assert line[key] > 0, key
    assert line["swaps"] == 2 and line["swap_ms_p50"] > 0 and line["swap_ms_p95"] >= line["swap_ms_p50"]
    assert line["swap_canary_delta_min"] > 0  # every swap changed what the server computes
    assert line["throughput"]["2"]["vllm direct"]["tokens_per_batch"] > 0
    # The same seeds through the API and straight into the engine sample the same tokens, and the
    # adapter samples what its merged weights do: the paths compare like with like.
    assert line["http_direct_same_samples"] >= 0.75
    assert line["lora_merged_same_samples"] >= 0.75
    assert "Throughput" in stdout and "Adapter swap" in stdout
    # Our OpenAI endpoint and vLLM's own served every request, on the same prompts.
    assert line["openai_all_served"] and line["openai_ours_served"] == line["openai_vllm_served"] == 3
    assert line["openai_ours_prompt_tokens"] == line["openai_vllm_prompt_tokens"] > 0
    assert line["openai_over_vllm"] > 0 and "OpenAI chat completions" in stdout

    servers = [command for _, command in descendants.values() if "cxr_rl.cli serve" in command]
    assert len(servers) == 2  # the base model's server and the merged model's
    assert any("vllm.entrypoints.openai.api_server" in command for _, command in descendants.values())
    left = still_running([child for child, _ in descendants.values()])  # one killed last may take a moment
    assert [command for child, command in descendants.values() if child in left] == []
