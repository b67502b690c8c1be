"""The real-size architectures the paper trains (MedGemma-4B = Gemma 3 4B, Qwen2.5-VL-3B) as data,
and the shape facts the memory planner needs, read from a transformers config.

Parameter counts are exact: the transformers model class is instantiated on the `meta` device
(shapes only, no weights allocated) and its parameters are summed. LoRA sizes come from a formula
over the language model's projection widths; tests check it against PEFT on the tiny models.
"""

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import UserError
from trainer.lora import LoraSettings

MEDGEMMA_4B, QWEN25_VL_3B = "medgemma-4b", "qwen2.5-vl-3b"
ARCHITECTURES = (MEDGEMMA_4B, QWEN25_VL_3B)
# What the real Qwen2.5-VL checkpoints' preprocessor_config.json sets when a config gives no bound.
QWEN_DEFAULT_MAX_PIXELS = 12_845_056
QWEN_DEFAULT_MIN_PIXELS = 3136
# Names a model folder or hub id may carry, for configs whose model path does not exist here.
_NAME_HINTS = {
    MEDGEMMA_4B: ("medgemma-4b", "gemma-3-4b", "gemma3-4b"),
    QWEN25_VL_3B: ("qwen2.5-vl-3b", "qwen2_5_vl-3b", "qwen2.5vl-3b"),
}


def real_size_config(arch: str) -> Any:
    """The transformers config of a real-size architecture (values of the published checkpoints)."""
    if arch == MEDGEMMA_4B:
        # transformers and peft load only when a model is sized: every run config imports this module
        from transformers import Gemma3Config

        return Gemma3Config(
            text_config={
                "hidden_size": 2560,
                "intermediate_size": 10240,
                "num_hidden_layers": 34,
                "num_attention_heads": 8,
                "num_key_value_heads": 4,
                "head_dim": 256,
                "query_pre_attn_scalar": 256,
                "vocab_size": 262208,
                "sliding_window": 1024,  # 5 local : 1 global layers (transformers' default pattern)
                "max_position_embeddings": 131072,
            },
            vision_config={
                "hidden_size": 1152,
                "intermediate_size": 4304,
                "num_hidden_layers": 27,
                "num_attention_heads": 16,
                "image_size": 896,
                "patch_size": 14,
                "vision_use_head": False,
            },
            mm_tokens_per_image=256,
        )
    if arch == QWEN25_VL_3B:
        # transformers and peft load only when a model is sized: every run config imports this module
        from transformers import Qwen2_5_VLConfig

        return Qwen2_5_VLConfig(
            text_config={
                "hidden_size": 2048,
                "intermediate_size": 11008,
                "num_hidden_layers": 36,
                "num_attention_heads": 16,
                "num_key_value_heads": 2,
                "vocab_size": 151936,
                "tie_word_embeddings": True,
                "max_position_embeddings": 128000,
                "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6},
            },
            vision_config={
                "depth": 32,
                "hidden_size": 1280,
                "intermediate_size": 3420,
                "num_heads": 16,
                "out_hidden_size": 2048,
                "patch_size": 14,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
                "window_size": 112,
                "fullatt_block_indexes": [7, 15, 23, 31],
            },
            tie_word_embeddings=True,
        )
    raise UserError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")


def scaled_config(
    arch: str, *, layers: int | None = None, vocab: int | None = None, image_size: int | None = None
) -> Any:
    """`real_size_config(arch)` with `layers` text and vision layers, a `vocab`-entry vocabulary and
    (MedGemma) `image_size`-pixel images, every width kept: real-width pieces small enough to run
    on a CPU. MedGemma still pools each image to 256 tokens, so its size must be a multiple of 224."""
    config = real_size_config(arch)
    data = config.to_dict()
    text, vision = data["text_config"], data["vision_config"]
    if layers is not None:
        if layers < 1:
            raise UserError(f"layers must be at least 1, not {layers}")
        text["num_hidden_layers"] = layers
        text.pop("layer_types", None)  # recomputed from the pattern for the new depth
        if arch == MEDGEMMA_4B:
            vision["num_hidden_layers"] = layers
        else:
            vision["depth"] = layers
            vision["fullatt_block_indexes"] = [
                index for index in vision["fullatt_block_indexes"] if index < layers
            ]
    if vocab is not None:
        text["vocab_size"] = vocab
    if image_size is not None:
        if arch != MEDGEMMA_4B or image_size % 224:
            raise UserError(
                f"image_size: only MedGemma's, and a multiple of 224 (256 tokens), not {image_size}"
            )
        vision["image_size"] = image_size
    return type(config)(**{key: value for key, value in data.items() if key != "model_type"})


@dataclass(frozen=True)
class TextShape:
    """The language model's widths, as the memory formulas use them."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    sliding_window: int | None  # tokens a sliding-window layer attends to
    sliding_layers: int  # layers with sliding-window attention (Gemma 3: 5 of every 6)
    hidden_norms_per_layer: int  # RMSNorms over the hidden state per decoder layer
    qk_norm: bool  # RMSNorm over each query and key head (Gemma 3)

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def projection_widths(self) -> dict[str, tuple[int, int]]:
        """(input, output) width of each projection LoRA may target."""
        h, i, q, kv = self.hidden, self.intermediate, self.q_width, self.kv_width
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }


@dataclass(frozen=True)
class VisionShape:
    hidden: int
    intermediate: int
    layers: int
    patch_size: int
    fixed_image_size: int | None  # SigLIP: every image resized to this; Qwen-VL: None (dynamic)
    fixed_image_tokens: int | None  # tokens one image becomes in the prompt, when fixed
    spatial_merge: int  # Qwen-VL merges 2x2 patches into one token

    def image_tokens(self, max_pixels: int | None) -> int:
        if self.fixed_image_tokens is not None:
            return self.fixed_image_tokens
        pixels_per_token = (self.patch_size * self.spatial_merge) ** 2
        return (max_pixels or QWEN_DEFAULT_MAX_PIXELS) // pixels_per_token

    def patches(self, max_pixels: int | None) -> int:
        """Patches one image puts through the vision tower (at the largest allowed size)."""
        if self.fixed_image_size is not None:
            return (self.fixed_image_size // self.patch_size) ** 2
        return self.image_tokens(max_pixels) * self.spatial_merge**2

    def pixel_values_elements(self, max_pixels: int | None) -> int:
        """Elements of one image's `pixel_values` (3 channels; Qwen-VL repeats each patch in time)."""
        if self.fixed_image_size is not None:
            return 3 * self.fixed_image_size**2
        return self.patches(max_pixels) * 3 * 2 * self.patch_size**2


@dataclass(frozen=True)
class ParameterCounts:
    total: int
    language_model: int  # embeddings included (tied with the output layer in both models)
    vision_tower: int
    projector: int


@dataclass(frozen=True)
class ModelShape:
    name: str  # what the planner calls it (architecture name or the model folder)
    family: str  # transformers model_type: gemma3 | qwen2_5_vl
    text: TextShape
    vision: VisionShape
    parameters: ParameterCounts


def model_shape(config: Any, name: str) -> ModelShape:
    """Shape facts of a Gemma 3 or Qwen2.5-VL config, with parameters counted on the meta device."""
    family = getattr(config, "model_type", None)
    if family not in ("gemma3", "qwen2_5_vl"):
        raise UserError(
            f"{name}: plan-memory knows the gemma3 (MedGemma) and qwen2_5_vl architectures, not {family!r}"
        )
    text_config, vision_config = config.text_config, config.vision_config
    layer_types = list(getattr(text_config, "layer_types", None) or [])
    sliding_layers = sum(kind == "sliding_attention" for kind in layer_types)
    head_dim = (
        getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    )
    text = TextShape(
        hidden=text_config.hidden_size,
        intermediate=text_config.intermediate_size,
        layers=text_config.num_hidden_layers,
        heads=text_config.num_attention_heads,
        kv_heads=text_config.num_key_value_heads,
        head_dim=head_dim,
        vocab=text_config.vocab_size,
        sliding_window=text_config.sliding_window if sliding_layers else None,
        sliding_layers=sliding_layers,
        hidden_norms_per_layer=4 if family == "gemma3" else 2,
        qk_norm=family == "gemma3",
    )
    if family == "gemma3":
        vision = VisionShape(
            hidden=vision_config.hidden_size,
            intermediate=vision_config.intermediate_size,
            layers=vision_config.num_hidden_layers,
            patch_size=vision_config.patch_size,
            fixed_image_size=vision_config.image_size,
            fixed_image_tokens=config.mm_tokens_per_image,
            spatial_merge=1,
        )
    else:
        vision = VisionShape(
            hidden=vision_config.hidden_size,
            intermediate=vision_config.intermediate_size,
            layers=vision_config.depth,
            patch_size=vision_config.patch_size,
            fixed_image_size=None,
            fixed_image_tokens=None,
            spatial_merge=vision_config.spatial_merge_size,
        )
    return ModelShape(name, family, text, vision, count_parameters(config))


def count_parameters(config: Any) -> ParameterCounts:
    """Exact parameter counts of the transformers model for `config` (meta device, no weights)."""
    return _count_parameters_cached(config.to_json_string(use_diff=False))


@functools.lru_cache(maxsize=8)
def _count_parameters_cached(config_json: str) -> ParameterCounts:
    # transformers and peft load only when a model is sized: every run config imports this module
    from transformers import AutoConfig

    data = json.loads(config_json)
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    counts = {"language_model": 0, "vision_tower": 0, "projector": 0}
    for name, parameter in meta_model(config).named_parameters():
        if "multi_modal_projector" in name or "visual.merger" in name:
            counts["projector"] += parameter.numel()
        elif "vision_tower" in name or ".visual." in name:
            counts["vision_tower"] += parameter.numel()
        else:
            counts["language_model"] += parameter.numel()
    return ParameterCounts(total=sum(counts.values()), **counts)


def meta_model(config: Any) -> Any:
    """The transformers model for `config` on the meta device: real module tree, no memory."""
    # transformers and peft load only when a model is sized: every run config imports this module
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config)


def lora_parameter_count(text: TextShape, lora: LoraSettings) -> int:
    """Parameters of one LoRA adapter on the language model: rank x (in + out) per projection."""
    widths = text.projection_widths()
    unknown = [name for name in lora.projections if name not in widths]
    if unknown:
        raise UserError(
            f"lora.projections: unknown projection(s) {', '.join(unknown)}; known: {', '.join(widths)}"
        )
    per_layer = sum(lora.rank * sum(widths[name]) for name in lora.projections)
    return per_layer * text.layers


def peft_lora_parameter_count(model: Any, lora: LoraSettings) -> int:
    """LoRA parameters PEFT creates on `model` (any device, meta included) for `lora`."""
    # transformers and peft load only when a model is sized: every run config imports this module
    from peft import get_peft_model

    peft_model = get_peft_model(model, lora.peft_config())
    return sum(p.numel() for name, p in peft_model.named_parameters() if ".lora_" in name)


def resolve_model_config(model: str, arch: str | None = None) -> tuple[str, Any]:
    """(name, transformers config) for a run's `model`: `arch` when given, else the model folder's
    config.json, else an architecture recognised in the model's name."""
    if arch is not None:
        return arch, real_size_config(arch)
    folder = Path(model)
    if (folder / "config.json").is_file():
        # transformers and peft load only when a model is sized: every run config imports this module
        from transformers import AutoConfig

        try:
            return folder.name, AutoConfig.from_pretrained(folder)
        except (ValueError, OSError) as error:
            raise UserError(
                f"{folder / 'config.json'}: not a config transformers can read ({error})"
            ) from None
    lowered = model.lower()
    for name, hints in _NAME_HINTS.items():
        if any(hint in lowered for hint in hints):
            return name, real_size_config(name)
    raise UserError(
        f"cannot tell the architecture of model {model!r}: it is not a folder with config.json and its name "
        f"names none of {', '.join(ARCHITECTURES)}; pass --arch"
    )


def build_random_model(config: Any, device: str = "cuda", dtype: Any = None) -> Any:
    """A random-weight model of `config`, allocated directly on `device` (for measuring real-size
    memory on a GPU; a real-size model is far too large for CI)."""
    # transformers and peft load only when a model is sized: every run config imports this module
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype or torch.bfloat16)
    return model.eval()
