"""Typed configuration of one rollout server (engine options pass through to vLLM)."""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int = Field(4096, ge=64)
    gpu_memory_utilization: float = Field(0.45, gt=0.0, le=1.0)  # GPU only: this server's share
    cpu_kv_cache_gib: float = Field(1.0, gt=0.0)  # CPU only (VLLM_CPU_KVCACHE_SPACE)
    max_lora_rank: int = Field(16, ge=1)
    max_loras: int = Field(4, ge=1)  # adapters resident at once (versions still in use)
    max_num_seqs: int = Field(64, ge=1)
    # Image token budget. Qwen-VL: bounds of pixels per image (28x28 px per visual token; the paper
    # used 256-512 tokens). Gemma3 resizes every image to a fixed size and ignores these.
    min_pixels: int | None = None
    max_pixels: int | None = None
    enforce_eager: bool = True
    # Chunked prefill with per-request seeds kills vLLM's CPU engine (it rewinds a CPU generator's
    # offset, which only CUDA generators support). None = off on CPU, vLLM's default on GPU.
    enable_chunked_prefill: bool | None = None
    enable_prefix_caching: bool = True
    seed: int = 0


class LimitsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_image_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(4096 * 4096, ge=64 * 64)
    max_items: int = Field(256, ge=1)
    max_n: int = Field(16, ge=1)


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engine: EngineConfig
    limits: LimitsConfig = LimitsConfig()
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)  # 0 = pick a free port
    api_token: str | None = None  # when set, mutating endpoints need `Authorization: Bearer <token>`
    data_root: Path | None = None  # image paths in requests are relative to this folder
    adapter_dir: Path | None = None  # where adapters sent as bytes are written (default: tmpfs)
    prompt_formats_file: Path | None = None  # extra prompt formats (name: instruction)
    default_prompt_format: str = "reasoning_a"
    canary: bool = True  # prove each new adapter version is live before reporting success
