"""TRL's `GRPOTrainer` set up like our GRPO run, for a side-by-side step time.

Same base model, the same PEFT LoRA (our `LoraSettings`, or the same SFT adapter to start from), the same X-rays and prompt, G, X-rays per
step, completion length, sampling, loss (Dr. GRPO, no reward scaling, beta and the clip range),
optimizer settings and reward function (ours, called in-process as TRL calls its rewards). TRL
generates with transformers `generate` on the CPU (`use_cpu=True`): its vLLM colocate mode fails
on this stack (its weight sync pushes names vLLM rejects).

Its step is timed between TRL's own step-end callbacks; `on_step` runs in between (our step,
interleaved so that drift in the machine's load falls on both alike) and is not counted.
Generation and reward scoring are timed by wrapping the trainer's `_generate` and
`_calculate_rewards` (private TRL methods: checked for TRL 1.16); the rest of the step is training.

One difference remains: with a PEFT model TRL's KL reference is the base model (adapter switched
off), ours is the frozen SFT adapter; either costs one forward pass per step.
"""

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrlStepTimes:
    step_s: list[float] = field(default_factory=list)
    rollout_s: list[float] = field(default_factory=list)
    reward_s: list[float] = field(default_factory=list)
    step_cpu_s: list[float] = field(default_factory=list)  # this process's CPU time in the step
    rollout_cpu_s: list[float] = field(default_factory=list)
    reward_cpu_s: list[float] = field(default_factory=list)
    completion_len_mean: list[float] = field(default_factory=list)


def trl_version() -> str | None:
    try:
        import trl
    except ImportError:
        return None
    return trl.__version__


def reward_function(spec: str, config: dict[str, Any]) -> Callable[..., list[float]]:
    """Our reward as a TRL reward function (the dataset's `labels` column is the ground truth)."""
    from rewards.protocol import score_request
    from rewards.registry import load_reward
    from shared.schemas import RewardItem, RewardRequest

    reward = load_reward(spec, config)
    batches = itertools.count()

    def score(prompts, completions, completion_ids, labels, **_: Any) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        items = [
            RewardItem(text=text, n_tokens=len(ids), labels=list(truth))
            for text, ids, truth in zip(texts, completion_ids, labels, strict=True)
        ]
        return score_request(reward, RewardRequest(batch_id=f"trl-{next(batches)}", items=items)).totals

    score.__name__ = f"{reward.name}_reward"
    return score


def xray_dataset(manifest: Path, prompt_format: str) -> Any:
    """The manifest's X-rays with our prompt, in TRL's conversational vision layout."""
    from datasets import Dataset

    from shared.images import load_xray
    from shared.manifest import read_manifest
    from shared.prompts import PromptRegistry, user_messages

    messages = user_messages(PromptRegistry().get(prompt_format))  # the image part, then the instruction
    records = read_manifest(manifest)
    return Dataset.from_dict(
        {
            "prompt": [messages] * len(records),
            "image": [load_xray(record.image_path(manifest.parent)) for record in records],
            "labels": [record.labels for record in records],
        }
    )


def run_trl(
    grpo: Any, out: Path, *, steps: int, on_step: Callable[[int], None] | None = None
) -> TrlStepTimes:
    """Train TRL for `steps` steps on `grpo`'s settings (our `GrpoConfig`); per-step times."""
    import torch
    from transformers import AutoModelForImageTextToText, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from benchmarks._timing import PhaseClock
    from trainer.model import load_processor

    sampling, loss, optim = grpo.sampling, grpo.loss, grpo.optim
    args = GRPOConfig(
        output_dir=str(out),
        use_cpu=True,
        bf16=False,
        seed=grpo.seed,
        max_steps=steps,
        per_device_train_batch_size=grpo.batch_size * sampling.group_size,  # TRL counts completions
        gradient_accumulation_steps=1,
        num_generations=sampling.group_size,
        max_completion_length=sampling.max_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        beta=loss.beta,
        epsilon=loss.clip_low,
        epsilon_high=loss.clip_high,
        loss_type="dr_grpo",
        scale_rewards="none" if loss.scale_rewards == "none" else "group",
        num_iterations=grpo.updates_per_batch,
        learning_rate=optim.lr,
        weight_decay=optim.weight_decay,
        max_grad_norm=optim.grad_clip,
        lr_scheduler_type="constant",
        warmup_steps=0,
        gradient_checkpointing=grpo.gradient_checkpointing,
        disable_dropout=True,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        log_completions=False,
        disable_tqdm=True,
    )
    model = AutoModelForImageTextToText.from_pretrained(grpo.model, dtype=torch.float32)
    peft_config = grpo.lora.peft_config()
    if grpo.sft_adapter is not None:  # start from the SFT adapter, as ours does
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, grpo.sft_adapter, is_trainable=True)
        peft_config = None
    times = TrlStepTimes()
    generate, rewards = PhaseClock(), PhaseClock()

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.start()

        def start(self) -> None:
            self.wall, self.cpu = time.perf_counter(), time.process_time()

        def on_train_begin(self, *_: Any, **__: Any) -> None:
            self.start()

        def on_step_end(self, _args: Any, state: Any, *__: Any, **___: Any) -> None:
            times.step_s.append(time.perf_counter() - self.wall)
            times.step_cpu_s.append(time.process_time() - self.cpu)
            for clock, wall, cpu in (
                (generate, times.rollout_s, times.rollout_cpu_s),
                (rewards, times.reward_s, times.reward_cpu_s),
            ):
                wall_s, cpu_s = clock.drain()
                wall.append(wall_s)
                cpu.append(cpu_s)
            if on_step is not None:
                on_step(state.global_step)
            self.start()

        def on_log(self, _args: Any, _state: Any, _control: Any, logs: dict | None = None, **_: Any) -> None:
            if logs and "completions/mean_length" in logs:
                times.completion_len_mean.append(float(logs["completions/mean_length"]))

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward_function(grpo.reward.spec, grpo.reward.config)],
        args=args,
        train_dataset=xray_dataset(Path(grpo.rl_manifest), grpo.prompt_format),
        processing_class=load_processor(grpo.model),
        peft_config=peft_config,
        callbacks=[StepClock()],
    )
    trainer.remove_callback(PrinterCallback)  # its per-step log dicts would bury the report on stdout
    trainer._generate = generate.wrap(trainer._generate)
    trainer._calculate_rewards = rewards.wrap(trainer._calculate_rewards)
    trainer.train()
    return times
