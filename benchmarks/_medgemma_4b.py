"""MedGemma-4B's shape without its weights: the architecture built on the meta device from the real
checkpoint's configuration (deploy/architectures.py), to count its parameters exactly and to give a LoRA adapter of the
trainer's settings its real tensor names, shapes and dtypes (filled with synthetic values)."""

from dataclasses import dataclass
from typing import Any

# The published checkpoint's parameter count (its safetensors hold 4,300,079,472 values; the
# lm_head is tied to the embeddings): a check that the configuration above is the real one.
PUBLISHED_PARAMETERS = 4_300_079_472


@dataclass
class ModelShape:
    parameters: int  # unique parameters (tied lm_head counted once), as a checkpoint stores them
    language_model_parameters: int
    lora_parameters: int
    lora_tensors: dict[str, tuple[tuple[int, ...], Any]]  # PEFT's saved name -> (shape, torch dtype)
    adapter_config: dict[str, Any]  # the adapter_config.json the trainer would publish


def medgemma_4b_shape(rank: int = 16) -> ModelShape:
    """Build MedGemma-4B (bf16, as the trainer loads it on a GPU) on the meta device and put the
    trainer's LoRA on it: no memory is allocated for the 4.3B weights."""
    import torch
    from peft import get_peft_model, get_peft_model_state_dict

    from deploy.architectures import MEDGEMMA_4B, meta_model, real_size_config
    from trainer.lora import LoraSettings, adapter_config_dict

    with torch.device("meta"):
        model = meta_model(real_size_config(MEDGEMMA_4B)).to(torch.bfloat16)
        parameters = sum(p.numel() for p in model.parameters())
        language_model = sum(p.numel() for n, p in model.named_parameters() if ".language_model." in n)
        # dropout 0 as in GRPO; PEFT keeps LoRA weights in float32 over a bf16 base (autocast_adapter_dtype)
        settings = LoraSettings(rank=rank, alpha=2 * rank, dropout=0.0)
        peft_model = get_peft_model(model, settings.peft_config(), adapter_name="policy")
    state = get_peft_model_state_dict(peft_model, adapter_name="policy")
    return ModelShape(
        parameters=parameters,
        language_model_parameters=language_model,
        lora_parameters=sum(tensor.numel() for tensor in state.values()),
        lora_tensors={name: (tuple(tensor.shape), tensor.dtype) for name, tensor in state.items()},
        adapter_config=adapter_config_dict(peft_model, "policy"),
    )


def synthetic_lora_state(shape: ModelShape, seed: int) -> dict[str, Any]:
    """Random tensors under the adapter's real names, shapes and dtypes (values do not matter for
    moving bytes, but random ones keep any compression from flattering the numbers)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return {
        name: (torch.randn(size, generator=generator) * 0.01).to(dtype)
        for name, (size, dtype) in shape.lora_tensors.items()
    }
