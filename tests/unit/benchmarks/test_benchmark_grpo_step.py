"""The GRPO step benchmark's own parts: our reward as TRL calls it, the matched settings (on-policy
and with overlap), the summaries and targets, and (where TRL is installed) TRL's trainer timed step
by step with ours in between."""

import subprocess
import sys
from types import SimpleNamespace

import pytest

from benchmarks._grpo_step_report import phase_line, print_cpu
from benchmarks._process_cpu import ProcessCpu
from benchmarks._trl_grpo import reward_function
from benchmarks.grpo_step import grpo_config, parse_args, trl_summary, use_trl
from rewards.protocol import score_request
from rewards.registry import load_reward
from shared.schemas import RewardItem, RewardRequest

GOOD = "<think>" + "The heart is enlarged. " * 40 + "</think>\n<solution>Cardiomegaly</solution>"


def test_trl_reward_function_scores_as_our_reward_does():
    config = {"min_tokens": 8}
    score = reward_function("hard", config)
    completions = [[{"role": "assistant", "content": text}] for text in (GOOD, "no format", GOOD)]
    labels = [["Cardiomegaly"], ["Cardiomegaly"], ["Edema"]]
    ids = [[1] * 300, [1] * 3, [1] * 300]
    totals = score(prompts=[None] * 3, completions=completions, completion_ids=ids, labels=labels, extra=1)
    items = [
        RewardItem(text=c[0]["content"], n_tokens=len(i), labels=truth)
        for c, i, truth in zip(completions, ids, labels, strict=True)
    ]
    expected = score_request(load_reward("hard", config), RewardRequest(batch_id="x", items=items)).totals
    assert totals == expected
    assert totals[0] > totals[2] and totals[0] > totals[1]  # right labels beat wrong ones and no format
    assert score.__name__ == "hard_reward"


def test_grpo_config_matches_the_arguments_and_never_checkpoints(tmp_path):
    args = parse_args(["--batch-size", "3", "--group-size", "5", "--max-tokens", "12", "--min-tokens", "4"])
    config = grpo_config(args, tmp_path / "model", tmp_path / "sft", tmp_path / "rl.jsonl")
    assert (config.batch_size, config.sampling.group_size, config.sampling.max_tokens) == (3, 5, 12)
    assert config.reward.config == {"min_tokens": 4} and config.sft_adapter == str(tmp_path / "sft")
    assert config.checkpoint_every > 1000 and config.max_steps > 1000
    assert (config.device, config.dtype, config.gradient_checkpointing) == ("cpu", "float32", False)
    assert config.max_staleness == 0
    overlap = grpo_config(args, tmp_path / "model", tmp_path / "sft", tmp_path / "rl.jsonl", max_staleness=1)
    assert (
        overlap.max_staleness == 1 and overlap.adapter_name != config.adapter_name
    )  # one replica, two trainers
    assert parse_args([]).torch_threads == [2, 1] and parse_args(["--torch-threads", "1"]).torch_threads == [
        1
    ]


def summary(wall: float, staleness: int = 0, core_s: float = 2.0) -> dict:
    return {
        "wall_s": wall, "rollout_s": 0.4, "rollout_sample_s": 0.5, "reward_s": 0.01, "train_s": 0.5,
        "sync_s": 0.02, "other_s": 0.01, "completion_len_mean": 60.0, "step_cpu_s": 1.0, "train_cpu_s": 0.9,
        "staleness_max": staleness, "steps": [wall], "trainer_cpu_s": 1.0, "engine_cpu_s": core_s - 1.1,
        "other_cpu_s": 0.1, "core_s": core_s, "floor_s": core_s / 2, "busy": core_s / 2 / wall,
        "sync_prepare_s": 0.005,
    }  # fmt: skip


def trl_figures(step_s: float) -> dict:
    return {
        **summary(step_s), "step_s": step_s, "core_s": 2.4, "floor_s": 1.2, "busy": 1.2 / step_s,
        "idle_engine_cpu_s": 0.01,
        "idle_other_cpu_s": 0.02,
    }  # fmt: skip


def test_the_json_keeps_its_keys_adds_the_overlap_and_judges_each_target():
    trl = trl_figures(1.5)
    line = phase_line(2, {"ours": summary(1.2), "ours_async": summary(1.1, staleness=1), "trl": trl})
    for key in ("ours_step_s", "trl_step_s", "rollout_s", "reward_s", "train_s", "sync_s", "sync_share"):
        assert key in line
    assert line["ours_async_step_s"] == 1.1 and line["async_staleness_max"] == 1
    assert line["ours_over_trl"] == 0.8 and line["ours_target_met"] is True  # <= 0.9x at 2 threads
    assert line["ours_async_over_trl"] == 0.733 and line["ours_async_target_met"] is False  # > 0.7x
    assert line["sync_target_met"] is True  # 2 % of each step
    one = phase_line(1, {"ours": summary(1.6), "ours_async": summary(1.4, staleness=1), "trl": trl})
    assert one["ours_async_target_met"] is True and "ours_target_met" not in one  # no on-policy target at 1
    alone = phase_line(2, {"ours": summary(1.2), "ours_async": summary(1.1, staleness=1)})
    assert alone["trl_step_s"] is None and "ours_async_target_met" not in alone


def test_trl_summary_drops_the_warmup_and_derives_train_time():
    times = SimpleNamespace(
        step_s=[9.0, 4.0, 6.0],
        rollout_s=[5.0, 2.0, 3.0],
        reward_s=[1.0, 0.5, 0.5],
        step_cpu_s=[3.0, 2.0, 2.0],
        rollout_cpu_s=[1.0, 1.0, 1.0],
        reward_cpu_s=[0.0, 0.0, 0.0],
        completion_len_mean=[8.0, 16.0, 32.0],
    )
    background = [{"engine": 9.0, "other": 9.0}, {"engine": 0.1, "other": 0.2}, {"engine": 0.3, "other": 0.0}]
    summary = trl_summary(times, warmup=1, background=background)
    assert summary["core_s"] == 2.0 and summary["idle_engine_cpu_s"] == pytest.approx(0.2)
    assert summary["busy"] == pytest.approx(summary["floor_s"] / summary["step_s"])
    assert summary["idle_other_cpu_s"] == pytest.approx(0.1)
    assert summary["step_s"] == 5.0 and summary["rollout_s"] == 2.5 and summary["reward_s"] == 0.5
    assert summary["train_s"] == 2.0 and summary["train_cpu_s"] == 1.0
    assert summary["completion_len_mean"] == 24.0 and summary["steps"] == [4.0, 6.0]


def test_the_cpu_floor_says_whether_an_overlapped_step_can_reach_its_target(capsys, monkeypatch):
    """An overlapped step cannot take less than its core-seconds over the cores: at 2 threads it must
    reach 0.7x TRL's step, so a floor above that is out of reach whatever overlaps."""
    import benchmarks._grpo_step_report as report

    monkeypatch.setattr(report.os, "cpu_count", lambda: 2)
    trl = trl_figures(1.0)
    for core_s, reachable in ((1.6, "OUT OF REACH"), (1.2, "within reach")):
        phase = {"ours": summary(1.0), "ours_async": summary(core_s / 2, 1, core_s=core_s), "trl": trl}
        line = phase_line(2, phase)
        assert line["cores"] == 2 and line["async_core_s"] == core_s and line["async_floor_s"] == core_s / 2
        assert line["async_floor_over_trl"] == core_s / 2 and line["trl_core_s"] == 2.4
        print_cpu(phase, line)
        printed = capsys.readouterr().out
        assert reachable in printed and "caution" not in printed  # the cores were all ours: busy 100 %
    loaded = {"ours": summary(2.0), "ours_async": summary(2.0, 1), "trl": trl}  # 2 core-s in 2 s: 50 %
    print_cpu(loaded, phase_line(2, loaded))
    assert "caution: our processes kept the cores only 50% busy" in capsys.readouterr().out


BURN = """
import subprocess, sys, time
child = None
if len(sys.argv) > 2:  # a descendant that burns too, as vLLM's engine core under the replica's actor
    child = subprocess.Popen([sys.executable, "-c", CODE, sys.argv[2]],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\\n"
print("ready", flush=True)
sys.stdin.readline()
if child is not None:
    child.stdin.write("go\\n")
    child.stdin.flush()
start = time.process_time()
while time.process_time() - start < float(sys.argv[1]):
    pass
if child is not None:
    assert child.stdout.readline() == "done\\n"
print("done", flush=True)
time.sleep(600)
"""


def burner(*cpu_s: float) -> subprocess.Popen:
    """A child that, once told to go, uses `cpu_s[0]` seconds of CPU (and its own child `cpu_s[1]`),
    says so, then sleeps until killed."""
    code = "CODE = " + repr(BURN) + "\n" + BURN
    process = subprocess.Popen(
        [sys.executable, "-c", code, *map(str, cpu_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline() == "ready\n"
    return process


def test_process_cpu_counts_each_role_apart():
    """CPU seconds, not wall time: the engine process and its child burn 0.2 s each, another child
    0.15 s; the engine's two go to `engine`, the other's to `other`, none to this process."""
    import psutil

    engine, other = burner(0.2, 0.2), burner(0.15)
    try:
        cpu = ProcessCpu(engine.pid)
        assert len(psutil.Process(engine.pid).children()) == 1
        for process in (engine, other):
            process.stdin.write("go\n")
            process.stdin.flush()
        assert engine.stdout.readline() == "done\n" and other.stdout.readline() == "done\n"
        used = cpu.take()
        # psutil reads clock ticks (10 ms): a margin of a few ticks below
        assert 0.35 <= used["engine"] < 0.7 and 0.12 <= used["other"] < 0.4
        assert used["trainer"] < 0.1  # this process only waited
        again = cpu.take()  # nothing since: all sleep
        assert again["engine"] < 0.05 and again["other"] < 0.05
    finally:
        for process in (engine, other):
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            process.kill()
            process.wait()


def test_trl_is_skipped_with_a_message_when_not_installed(monkeypatch, capsys):
    import benchmarks._trl_grpo

    assert use_trl(skip=True) is False
    monkeypatch.setattr(benchmarks._trl_grpo, "trl_version", lambda: None)
    assert use_trl(skip=False) is False
    assert "TRL is not installed" in capsys.readouterr().err
    monkeypatch.setattr(benchmarks._trl_grpo, "trl_version", lambda: "1.16.0")
    assert use_trl(skip=False) is True


@pytest.mark.parametrize(
    "argv",
    [
        ["--group-size", "1"],
        ["--steps", "0"],
        ["--warmup", "-1"],
        ["--torch-threads", "0"],
        ["--torch-threads", "2,x"],
    ],
)
def test_parse_args_refuses_settings_grpo_cannot_run(argv):
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_trl_steps_are_timed_with_our_turn_in_between(tiny_medgemma, phantom_root, tmp_path):
    pytest.importorskip("trl", reason="TRL is the benchmark extra: pip install '.[bench]'")
    from benchmarks._trl_grpo import run_trl

    args = parse_args(["--batch-size", "1", "--group-size", "2", "--max-tokens", "4"])
    manifest = phantom_root / "manifests" / "mimic_train.jsonl"
    config = grpo_config(args, tiny_medgemma, tmp_path / "unused", manifest).model_copy(
        update={"sft_adapter": None}
    )
    turns: list[int] = []
    times = run_trl(config, tmp_path / "trl", steps=2, on_step=turns.append)
    assert turns == [1, 2]
    assert len(times.step_s) == len(times.rollout_s) == len(times.reward_s) == 2
    for step, rollout, reward in zip(times.step_s, times.rollout_s, times.reward_s, strict=True):
        assert 0 < rollout < step and 0 < reward < step
    assert times.completion_len_mean and all(0 < n <= 4 for n in times.completion_len_mean)
