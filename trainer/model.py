"""Loading the policy: a base vision-language model, frozen, with a LoRA adapter on its language model.

SFT and GRPO both start here. The PeftModel may hold further adapters (GRPO loads a frozen
"reference" next to the trainable "policy"), so adapters are always named.
"""

from pathlib import Path
from typing import Any

import torch

from shared.errors import UserError
from trainer.lora import LoraSettings


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' asked for, but no CUDA GPU is visible (use device: cpu or auto)")
    return resolved


def cap_gpu_memory(fraction: float, planned_gpu_gib: float, tolerance: float = 0.03) -> float:
    """Bind this process to its share of a GPU it shares with vLLM (`gpu:` in the run config): the
    caching allocator refuses to grow past `fraction` of the device's memory, so the trainer fails
    with torch.OutOfMemoryError instead of taking vLLM's share. Refuses a GPU whose memory is not
    the one the split was planned for. Returns the cap in GiB."""
    if not torch.cuda.is_available():
        raise UserError(
            "the run config's gpu: section caps the trainer's GPU memory, but the trainer sees no CUDA GPU "
            "(remove gpu: to train on CPUs)"
        )
    device = torch.device("cuda", torch.cuda.current_device())
    properties = torch.cuda.get_device_properties(device)
    total_gib = properties.total_memory / 1024**3
    if abs(total_gib - planned_gpu_gib) > tolerance * planned_gpu_gib:
        raise UserError(
            f"the run's memory split was planned for a {planned_gpu_gib:.1f} GiB GPU, but the trainer's GPU "
            f"({properties.name}) has {total_gib:.1f} GiB: set gpu.kind (or gpu.memory_gib) to this GPU and "
            "check the plan with `cxr-rl plan-memory`"
        )
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return fraction * total_gib


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """'auto': bfloat16 on a GPU, float32 on the CPU (CPU bf16 matmuls are slow and imprecise)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in names:
        raise UserError(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(names)}")
    return names[dtype]


def check_model_dir(model_dir: str | Path) -> Path:
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise UserError(f"model folder {model_dir} has no config.json (expected a hub-layout checkpoint)")
    return model_dir


def load_processor(
    model_dir: str | Path, *, min_pixels: int | None = None, max_pixels: int | None = None
) -> Any:
    """The model's processor; the pixel bounds (Qwen-VL's image token budget) apply only where the
    image processor takes them (Gemma3 resizes every image to one fixed size)."""
    # transformers and peft (seconds) load with a model: the driver imports this module
    from transformers import AutoProcessor

    model_dir = check_model_dir(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    image_processor = processor.image_processor
    if (min_pixels or max_pixels) and takes_pixel_bounds(image_processor):
        # Qwen-VL's `size` holds pixel counts: shortest_edge = min_pixels, longest_edge = max_pixels.
        size = {
            "shortest_edge": min_pixels or image_processor.size["shortest_edge"],
            "longest_edge": max_pixels or image_processor.size["longest_edge"],
        }
        processor = AutoProcessor.from_pretrained(model_dir, size=size)
    return processor


def takes_pixel_bounds(image_processor: Any) -> bool:
    valid = getattr(image_processor, "valid_kwargs", None)
    return "min_pixels" in getattr(valid, "__annotations__", {})


def end_of_turn_ids(model_dir: str | Path, processor: Any) -> frozenset[int]:
    """Token ids that end the assistant's turn: the generation config's EOS ids (Gemma3:
    <eos> and <end_of_turn>; Qwen-VL: <|im_end|> and <|endoftext|>), else the tokenizer's EOS."""
    # transformers and peft (seconds) load with a model: the driver imports this module
    from transformers import GenerationConfig

    ids: list[int] = []
    try:
        eos = GenerationConfig.from_pretrained(model_dir).eos_token_id
        ids = [eos] if isinstance(eos, int) else list(eos or [])
    except OSError:
        pass  # no generation_config.json
    if not ids and processor.tokenizer.eos_token_id is not None:
        ids = [processor.tokenizer.eos_token_id]
    if not ids:
        raise UserError(
            f"{model_dir}: no end-of-turn token (no eos_token_id in generation config or tokenizer)"
        )
    return frozenset(ids)


def load_policy(
    model_dir: str | Path,
    lora: LoraSettings,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    gradient_checkpointing: bool = True,
    adapter_path: str | Path | None = None,
    adapter_name: str = "policy",
    trainable: bool = True,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    train_in_full: tuple[str, ...] = (),
) -> tuple[Any, Any]:
    """(peft_model, processor): the base model frozen (vision encoder and projector included) with
    a new LoRA from `lora`, or the adapter saved in `adapter_path` (whose own config then wins).
    `train_in_full` unfreezes the base parameters whose names contain one of its strings (a
    diagnostic of SFT: see SftConfig.train_in_full)."""
    # transformers and peft (seconds) load with a model: the driver imports this module
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForImageTextToText

    model_dir = check_model_dir(model_dir)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    processor = load_processor(model_dir, min_pixels=min_pixels, max_pixels=max_pixels)
    base = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch_dtype)
    base.requires_grad_(False)
    if adapter_path is None:
        model = get_peft_model(base, lora.peft_config(), adapter_name=adapter_name)
    else:
        adapter_path = Path(adapter_path)
        if not (adapter_path / "adapter_config.json").is_file():
            raise UserError(f"adapter folder {adapter_path} has no adapter_config.json")
        model = PeftModel.from_pretrained(
            base, adapter_path, adapter_name=adapter_name, is_trainable=trainable
        )
    if not trainable:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
    elif train_in_full:
        unfreeze(model, train_in_full)
    model.to(device)
    if trainable and gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # PEFT's recipe: with the embeddings frozen, checkpointed blocks need an input that requires
        # grad, or no gradient reaches the LoRA weights inside them.
        model.enable_input_require_grads()
    model.train(trainable)
    return model, processor


def full_module_names(model: Any, patterns: tuple[str, ...]) -> list[str]:
    """The base (non-LoRA) parameters whose names contain one of `patterns`."""
    return [
        name
        for name, _ in model.named_parameters()
        if "lora_" not in name and any(pattern in name for pattern in patterns)
    ]


def unfreeze(model: Any, patterns: tuple[str, ...]) -> None:
    names = set(full_module_names(model, patterns))
    unmatched = [p for p in patterns if not any(p in name for name in names)]
    if unmatched:
        raise UserError(
            f"train_in_full: no base parameter's name contains {', '.join(map(repr, unmatched))} "
            "(e.g. multi_modal_projector, vision_tower, language_model)"
        )
    for name, parameter in model.named_parameters():
        if name in names:
            parameter.requires_grad_(True)


def trainable_parameters(model: Any) -> list[torch.nn.Parameter]:
    return [parameter for parameter in model.parameters() if parameter.requires_grad]
