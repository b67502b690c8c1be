"""Typed configuration of one rollout server (engine options pass through to vLLM)."""

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from shared.config import StrictModel


class EngineSettings(StrictModel):
    """vLLM engine options a run config sets; the model comes from the run (see EngineConfig)."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="vLLM's --dtype (auto: chosen from the model's own dtype)"
    )
    max_model_len: int = Field(4096, ge=64, description="prompt + completion tokens per sequence")
    gpu_memory_utilization: float = Field(
        0.45, gt=0.0, le=1.0, description="GPU only: this server's share of the GPU's memory"
    )
    cpu_kv_cache_gib: float = Field(
        1.0, gt=0.0, description="CPU only: KV cache size (VLLM_CPU_KVCACHE_SPACE)"
    )
    max_lora_rank: int = Field(16, ge=1, description="the highest adapter rank the engine accepts")
    max_loras: int = Field(4, ge=1, description="adapters resident at once (versions still in use)")
    cpu_lora_ops: Literal["grouped", "vllm"] = Field(
        "grouped",
        description="CPU only: how the engine adds the LoRA deltas. grouped: one matrix product per adapter in the "
        "batch (rollout_server/cpu_lora.py); vllm: vLLM's own CPU ops, which copy the adapter's weights once per "
        "token. Same numbers; grouped is faster (README: LoRA serving cost)",
    )
    max_num_seqs: int = Field(64, ge=1, description="sequences the engine decodes at once")
    min_pixels: int | None = Field(
        None,
        description="Qwen-VL image token budget, pixels per image (28x28 px per visual token; the paper used "
        "256-512 tokens); Gemma3 resizes every image to a fixed size and ignores it",
    )
    max_pixels: int | None = Field(
        None, description="Qwen-VL: upper bound of pixels per image (see min_pixels)"
    )
    enforce_eager: bool = Field(True, description="no CUDA graphs: faster start, slower decoding")
    # Chunked prefill with per-request seeds kills vLLM's CPU engine (it rewinds a CPU generator's
    # offset, which only CUDA generators support).
    enable_chunked_prefill: bool | None = Field(
        None, description="None: off on CPU (seeded requests would kill the engine), vLLM's default on GPU"
    )
    enable_prefix_caching: bool = Field(True, description="reuse the KV cache of a shared prompt prefix")
    seed: int = Field(0, description="the engine's seed (a request's own seed wins)")


class EngineConfig(EngineSettings):
    model: str = Field(description="model folder (hub layout)")


class LimitsConfig(StrictModel):
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="JSON requests")
    max_adapter_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description="adapter uploads (raw safetensors): a rank-16 MedGemma-4B LoRA is 119 MB; twice that fits",
    )
    max_image_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="per image, encoded")
    max_image_pixels: int = Field(4096 * 4096, ge=64 * 64, description="per image, every DICOM frame counted")
    # Without it, 256 small 4096x4096 PNGs in one 64 MiB body decode to 13 GB.
    max_request_pixels: int = Field(
        16 * 4096 * 4096,
        ge=64 * 64,
        description="decoded pixels per request, all images together (about 1 GiB as RGB)",
    )
    max_items: int = Field(256, ge=1, description="X-rays per rollout request")
    max_n: int = Field(16, ge=1, description="completions per X-ray (n)")


class ServerConfig(StrictModel):
    removed_options: ClassVar[dict[str, str]] = {
        "default_prompt_format": "default_prompt_format was never read and is gone: a rollout request that "
        "names no prompt_format is sampled with reasoning_a (shared/schemas.py, RolloutItem)"
    }

    engine: EngineConfig = Field(description="the vLLM engine and the model it serves")
    limits: LimitsConfig = Field(
        LimitsConfig(), description="bad or oversized requests are refused with a 4xx"
    )
    host: str = Field("127.0.0.1", description="the address to listen on (0.0.0.0: every interface)")
    port: int = Field(8000, ge=0, le=65535, description="0 = pick a free port")
    served_model_name: str | None = Field(
        None,
        description="the name OpenAI clients use for the base model (vLLM's convention: default the model "
        "argument)",
    )
    api_token: str | None = Field(
        None,
        description="vLLM's --api-key: when set, every /v1 endpoint needs `Authorization: Bearer <token>`. "
        "Adapter loads and deletes need it always: a server without one refuses them (closed by default)",
    )
    data_root: Path | None = Field(None, description="image paths in requests are relative to this folder")
    adapter_root: Path | None = Field(
        None, description="load-by-path only from under this folder (none: uploads only)"
    )
    adapter_dir: Path | None = Field(None, description="where loaded adapters are kept (default: tmpfs)")
    prompt_formats_file: Path | None = Field(None, description="extra prompt formats (name: instruction)")
    canary: bool = Field(True, description="prove each new adapter version is live before reporting success")

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.engine.model
