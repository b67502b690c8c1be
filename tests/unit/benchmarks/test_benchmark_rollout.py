"""The rollout benchmark's own logic: how it slices images, compares samples, cuts generated rows,
summarises runs, and merges a LoRA into a checkpoint that keeps the base's tensor names."""

import pytest
import torch

from benchmarks.common import percentile, random_lora_model, save_merged_model
from benchmarks.rollout import by_batch, headline, image_sets, parse_args, summarise
from benchmarks.rollout_openai import ChatLoad, ChatRound, summarise_openai, vllm_server_command
from benchmarks.rollout_paths import BatchRun, same_samples, until_stop


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 50) == 10.0
    assert percentile(values, 95) == 19.0
    assert percentile(values, 100) == 20.0
    assert percentile([3.0], 95) == 3.0


def test_image_sets_are_disjoint_and_cover_every_size_each_repeat():
    images = [bytes([i]) for i in range(30)]
    sets = image_sets(images, [2, 8], repeats=3, seed=100)
    assert [(s.batch, s.repeat) for s in sets] == [(2, 0), (8, 0), (2, 1), (8, 1), (2, 2), (8, 2)]
    used = [image for s in sets for image in s.images]
    assert len(used) == len(set(used)) == 30
    seeds = [s.seed + i for s in sets for i in range(s.batch)]  # per-item seeds never repeat
    assert len(set(seeds)) == len(seeds)


def test_same_samples_counts_identical_completions():
    first = [BatchRun(1, 1.0, 2, 5, [[1, 2], [3, 4, 5]]), BatchRun(1, 1.0, 2, 2, [[6], [7]])]
    second = [BatchRun(1, 1.0, 2, 5, [[1, 2], [3, 4, 9]]), BatchRun(1, 1.0, 2, 2, [[6], [7]])]
    assert same_samples(first, second) == 0.75
    with pytest.raises(ValueError):
        same_samples(first, second[:1])


def test_until_stop_keeps_the_stop_token_and_drops_padding():
    assert until_stop([5, 6, 1, 0, 0], {1, 106}) == [5, 6, 1]
    assert until_stop([5, 106, 1], {1, 106}) == [5, 106]
    assert until_stop([5, 6, 7], {1}) == [5, 6, 7]


def test_summary_pairs_each_batch_with_the_reference_run_on_the_same_images():
    # The machine got twice as slow for the second batch: both paths felt it alike.
    direct = [BatchRun(32, seconds, 128, 1000, [], front_cpu_seconds=0.2) for seconds in (1.0, 2.0, 4.0)]
    http = [BatchRun(32, seconds, 128, 1000, [], 0.9 * seconds, 0.25) for seconds in (1.25, 2.5, 4.0)]
    figures = summarise(http, direct)
    assert figures["tokens_per_s"] == 400.0
    assert (figures["tokens_per_s_min"], figures["tokens_per_s_max"]) == (250.0, 800.0)
    assert figures["vs_reference"] == 0.8  # median of 0.8, 0.8, 1.0
    assert figures["front_cpu_ms"] == 250.0 and figures["outside_engine_share"] == 0.1
    assert "front_cpu_ms" not in summarise([BatchRun(8, 1.0, 4, 10, [])], [BatchRun(8, 1.0, 4, 10, [])])


def test_headline_reports_the_biggest_batch():
    direct = [BatchRun(32, 1.0, 128, 1000, [], front_cpu_seconds=0.2)]
    http = [BatchRun(32, 1.1, 128, 1000, [], 1.0, 0.23)]
    small = [BatchRun(8, 1.0, 32, 100, [], 0.5, 0.1)]
    result = {"throughput": by_batch({"vllm direct": small + direct, "http": small + http}, "vllm direct")}
    line = headline(result, 32)
    assert line["direct_tokens_per_s"] == 1000.0 and line["http_over_direct"] == 0.909
    assert line["http_layer_cpu_ms"] == 30.0
    assert "hf_tokens_per_s" not in line and "lora_tokens_per_s" not in line


def test_openai_ratio_pairs_rounds_on_the_same_images_and_counts_every_request():
    load = ChatLoad(requests=64, n=4, max_tokens=64, temperature=0.8, top_p=0.95, model="m")
    runs = [  # the machine slowed down in round 1: both servers felt it
        ChatRound("ours", 0, 10.0, 64, 16384, 9000), ChatRound("vllm", 0, 10.5, 64, 16384, 9000),
        ChatRound("vllm", 1, 20.0, 64, 16384, 9000), ChatRound("ours", 1, 20.0, 63, 16128, 8860),
    ]  # fmt: skip
    figures = summarise_openai(runs, "ours", "vllm", load)
    assert figures["openai_over_vllm_per_round"] == [1.05, 0.984]
    assert figures["openai_over_vllm"] == round((1.05 + 16128 / 16384) / 2, 3)
    assert (figures["openai_ours_served"], figures["openai_vllm_served"]) == (127, 128)
    assert figures["openai_all_served"] is False


def test_vllm_server_gets_our_engine_options(tiny_medgemma):
    from rollout_server.config import EngineConfig

    command = vllm_server_command(
        EngineConfig(model=str(tiny_medgemma), max_model_len=1024, max_num_seqs=32), 8123
    )
    joined = " ".join(command)
    assert "vllm.entrypoints.openai.api_server" in joined and f"--model {tiny_medgemma}" in joined
    for option in ("--max-model-len 1024", "--max-num-seqs 32", "--enable-lora", "--max-lora-rank 16",
                   "--no-enable-chunked-prefill", "--enforce-eager", "--dtype float32", "--port 8123"):  # fmt: skip
        assert option in joined, option
    # the same LoRA ops as our server's on CPU (rollout_server.cpu_lora), vLLM's own where we keep them
    assert "--worker-cls rollout_server.cpu_worker.GroupedLoraCpuWorker" in joined
    theirs = vllm_server_command(EngineConfig(model=str(tiny_medgemma), cpu_lora_ops="vllm"), 8123)
    assert "--worker-cls rollout_server.cpu_worker.QuietCpuWorker" in " ".join(theirs)


def test_arguments_are_checked():
    assert parse_args(["--batch-sizes", "8,32"]).batch_sizes == [8, 32]
    bad_arguments = (
        ["--batch-sizes", "8,x"], ["--batch-sizes", "0"], ["--n", "0"], ["--torch-threads", "0"],
        ["--openai-requests", "0"],
    )  # fmt: skip
    for bad in bad_arguments:
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_merged_checkpoint_has_the_base_tensor_names_and_the_adapter_s_outputs(tiny_medgemma, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText

    peft_model = random_lora_model(tiny_medgemma, seed=3)
    input_ids = torch.tensor([[2, 10, 11, 12, 13, 14, 15]])
    with torch.no_grad():
        adapted = peft_model(input_ids=input_ids).logits
        with peft_model.disable_adapter():
            base = peft_model(input_ids=input_ids).logits
    assert (adapted - base).abs().max() > 1e-3  # the adapter is live, so the merge has work to do

    merged_dir = save_merged_model(peft_model, tiny_medgemma, tmp_path / "merged")

    def names(folder):
        with safe_open(str(folder / "model.safetensors"), "pt") as tensors:
            return set(tensors.keys())

    assert names(merged_dir) == names(tiny_medgemma)
    assert (merged_dir / "tokenizer_config.json").is_file()
    merged = AutoModelForImageTextToText.from_pretrained(merged_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        assert (merged(input_ids=input_ids).logits - adapted).abs().max() < 1e-4
    assert [path.name for path in tmp_path.iterdir()] == ["merged"]  # no staging folder left behind
