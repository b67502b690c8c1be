"""LoRA on the language model only, and the adapter's wire form (LoRA tensors, never base weights).

vLLM applies LoRA to the language model only for Gemma3 and Qwen-VL, and both vision towers have
modules named like the language model's (SigLIP's q_proj, Qwen-VL's gate_proj), so the targets are
a regex anchored on `language_model`, not bare module names.
"""

import io
import json
from typing import Any

import torch
from pydantic import Field
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from shared.config import StrictModel
from shared.schemas import AdapterUpdate

LANGUAGE_MODEL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraSettings(StrictModel):
    """The paper's recipe: rank 16, alpha 32, dropout 0.1 on attention and MLP projections."""

    rank: int = Field(16, ge=1, description="r: the rank of each LoRA update")
    alpha: int = Field(32, ge=1, description="LoRA alpha: the update is scaled by alpha / rank")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on the LoRA input")
    projections: tuple[str, ...] = Field(
        LANGUAGE_MODEL_PROJECTIONS, description="the language model's projections that get an adapter"
    )

    def target_modules(self) -> str:
        return rf".*language_model.*\.({'|'.join(self.projections)})"

    def peft_config(self) -> Any:
        # peft takes seconds to import: every run config (LoraSettings) imports this module
        from peft import LoraConfig

        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules(),
            bias="none",
            task_type="CAUSAL_LM",
        )


def adapter_config_dict(model: Any, adapter_name: str) -> dict[str, Any]:
    """The adapter_config.json PEFT's save_pretrained would write, as a dict."""
    config = model.peft_config[adapter_name].to_dict()
    for key, value in list(config.items()):
        if isinstance(value, set):
            config[key] = sorted(value)
    config["inference_mode"] = True
    return json.loads(json.dumps(config, default=str))


def lora_state_dict(model: Any, adapter_name: str) -> dict[str, torch.Tensor]:
    """The adapter's tensors under the names PEFT saves (adapter name stripped), on CPU."""
    # peft takes seconds to import: every run config (LoraSettings) imports this module
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    return {key: tensor.detach().to("cpu", copy=True).contiguous() for key, tensor in state.items()}


def adapter_update(model: Any, adapter_name: str, publish_as: str, version: int) -> AdapterUpdate:
    state = lora_state_dict(model, adapter_name)
    return AdapterUpdate(
        name=publish_as,
        version=version,
        safetensors=save_safetensors(state),
        adapter_config=adapter_config_dict(model, adapter_name),
    )


def tensors_from_update(update: AdapterUpdate) -> dict[str, torch.Tensor]:
    return load_safetensors(io.BytesIO(update.safetensors).getvalue())
