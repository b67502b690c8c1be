"""One GPU budget binds the run: vLLM's share, Ray's fractions and the trainer's cap all come from the
config's `gpu:` section, `plan-memory` prints the very numbers the run uses, and a config that sets
one of them by hand is refused."""

import json
from pathlib import Path

import pytest
import yaml

from cxr_rl.cli import main
from deploy.config import RunConfig
from deploy.memory.estimates import TRAINER_CUDA_CONTEXT_GIB, VLLM_CUDA_CONTEXT_GIB
from deploy.memory.plan import plan_memory
from deploy.memory.split import GPU_MEMORY_GIB, GpuSettings, gpu_split
from shared.config import load_config
from shared.errors import UserError

CONFIGS = Path(__file__).resolve().parents[4] / "deploy" / "configs"
ARCH = "medgemma-4b"


def config_file(tmp_path: Path, **changes) -> Path:
    """The shipped MedGemma config with `changes` merged in (top-level sections replaced)."""
    data = yaml.safe_load((CONFIGS / "medgemma-4b-a100.yaml").read_text())
    data["data"] = {"rl_manifest": "rl.jsonl", "sft_manifest": "sft.jsonl"}
    data.update(changes)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("kind", sorted(GPU_MEMORY_GIB))
@pytest.mark.parametrize("replicas", [1, 2])
def test_shared_split_fills_the_gpu_exactly_once(kind, replicas):
    total = GPU_MEMORY_GIB[kind]
    share = 0.3 if replicas == 2 else 0.4
    split = gpu_split(GpuSettings(kind=kind, rollout_share=share), replicas)
    assert split.vllm_memory_utilization == share
    assert split.rollout_share_gib == pytest.approx(share * total)
    # Ray's books: the replicas and the trainer fit one GPU, each replica's fraction covering its
    # share and vLLM's CUDA context
    assert replicas * split.rollout_num_gpus + split.trainer_num_gpus <= 1.0
    assert split.rollout_num_gpus * total >= split.rollout_share_gib + VLLM_CUDA_CONTEXT_GIB
    # the trainer's cap plus its context is what the replicas leave, never more
    assert split.trainer_share_gib == pytest.approx(
        total - replicas * (share * total + VLLM_CUDA_CONTEXT_GIB)
    )
    assert split.trainer_cap_gib + TRAINER_CUDA_CONTEXT_GIB <= split.trainer_share_gib
    assert split.trainer_cap_gib + TRAINER_CUDA_CONTEXT_GIB > split.trainer_share_gib - 0.01 * total
    assert split.trainer_memory_fraction <= split.trainer_num_gpus


def test_separate_layout_gives_whole_gpus_and_no_cap():
    split = gpu_split(GpuSettings(kind="h100-80gb", layout="separate", rollout_share=0.85), 2)
    assert (split.rollout_num_gpus, split.trainer_num_gpus) == (1.0, 1.0)
    assert split.trainer_memory_fraction is None and split.trainer_cap_gib is None
    assert split.vllm_memory_utilization == 0.85
    assert "none (a GPU of its own)" in " ".join(split.describe())


def test_a_share_that_leaves_the_trainer_nothing_is_refused_at_load(tmp_path):
    path = config_file(tmp_path, gpu={"kind": "a10g-24gb", "rollout_share": 0.48}, rollout={"replicas": 2})
    with pytest.raises(UserError, match=r"gpu.rollout_share 0.48 x 2 replica\(s\).*lower gpu.rollout_share"):
        load_config(path, RunConfig)


@pytest.mark.parametrize(
    "section, key",
    [
        ({"rollout": {"engine": {"gpu_memory_utilization": 0.5}}}, "rollout.engine.gpu_memory_utilization"),
        ({"rollout": {"placement": {"num_gpus": 0.45}}}, "rollout.placement.num_gpus"),
        ({"trainer": {"num_gpus": 0.5}}, "trainer.num_gpus"),
    ],
)
def test_a_number_the_budget_owns_cannot_be_set_by_hand(tmp_path, section, key):
    path = config_file(tmp_path, **section)
    with pytest.raises(UserError, match=rf"{key} is derived from the gpu: section"):
        load_config(path, RunConfig)


def test_unknown_gpu_needs_its_memory(tmp_path):
    with pytest.raises(UserError, match="gpu: .*kind: unknown GPU 'rtx-6000'"):
        load_config(config_file(tmp_path, gpu={"kind": "rtx-6000"}), RunConfig)
    config = load_config(config_file(tmp_path, gpu={"kind": "rtx-6000", "memory_gib": 47.5}), RunConfig)
    assert config.gpu_split().gpu_gib == 47.5


def test_the_engine_the_plan_and_the_run_use_the_same_numbers(tmp_path):
    config = load_config(config_file(tmp_path, gpu={"kind": "a100-80gb", "rollout_share": 0.35}), RunConfig)
    split = config.gpu_split()
    assert config.engine_config("model").gpu_memory_utilization == 0.35
    plan = plan_memory(config, arch=ARCH)
    assert plan.split == split and plan.gpu == "a100-80gb" and plan.fits
    rollout, grpo, sft = plan.processes
    assert rollout.share_gib == pytest.approx(split.rollout_share_gib)
    assert grpo.share_gib == sft.share_gib == pytest.approx(split.trainer_share_gib)
    assert plan.totals()["split"]["trainer_memory_fraction"] == split.trainer_memory_fraction


def test_plan_on_another_gpu_rederives_the_split(tmp_path):
    config = load_config(config_file(tmp_path), RunConfig)
    plan = plan_memory(config, "h200-141gb", arch=ARCH)
    assert plan.split.gpu_gib == GPU_MEMORY_GIB["h200-141gb"] and plan.split.kind == "h200-141gb"
    assert plan.split.trainer_share_gib > config.gpu_split().trainer_share_gib


def test_plan_memory_prints_the_numbers_the_run_uses(tmp_path, capsys):
    path = config_file(tmp_path, model="/models/medgemma-4b-it")
    assert main(["plan-memory", "--config", str(path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    split = load_config(path, RunConfig).gpu_split()
    assert json.loads(out[-1])["split"] == split.as_dict()
    assert "  rollout.engine.gpu_memory_utilization = 0.4 (31.7 GiB of 79.2)" in out
    assert (
        f"  Ray num_gpus: rollout replica {split.rollout_num_gpus:g}, trainer {split.trainer_num_gpus:g}"
        in out
    )
    assert any(
        line.startswith(f"  trainer memory cap = {split.trainer_memory_fraction:g} of the GPU")
        for line in out
    )


def test_train_check_shows_the_derived_numbers(tmp_path, capsys):
    path = config_file(tmp_path, model="/models/medgemma-4b-it")
    assert main(["train", "--config", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    assert "# from gpu: rollout.engine.gpu_memory_utilization = 0.4" in out
    assert "# from gpu: trainer memory cap = " in out


def test_cpu_config_has_no_budget_and_no_split():
    config = load_config(CONFIGS / "default.yaml", RunConfig)
    assert config.gpu is None and config.gpu_split() is None
    plan = plan_memory(config)
    assert plan.processes == [] and "no gpu: section" in plan.no_gpu_reason
