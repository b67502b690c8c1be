"""vLLM's async engine, started from our typed config, with the few calls the server needs."""

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from rollout_server.config import EngineConfig
from rollout_server.errors import RequestError, invalid
from shared.chat import CANARY_TOKEN_IDS

ENGINE_DEAD = "the vLLM engine died; this server is going down to be restarted (poll /ready)"


@contextlib.contextmanager
def engine_alive() -> Iterator[None]:
    """A call into a dead engine answers 503 (retry elsewhere or later), not a 500."""
    # vLLM (seconds to import) loads in the server process only, not where replicas are placed
    from vllm.v1.engine.exceptions import EngineDeadError

    try:
        yield
    except EngineDeadError:
        raise RequestError(503, "server", ENGINE_DEAD) from None


def engine_args(config: EngineConfig) -> Any:
    # vLLM (seconds to import) loads in the server process only, not where replicas are placed
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.platforms import current_platform

    on_cpu = current_platform.is_cpu()
    chunked_prefill = config.enable_chunked_prefill
    if chunked_prefill is None and on_cpu:
        chunked_prefill = False  # see EngineConfig.enable_chunked_prefill
    mm_kwargs = {k: v for k, v in (("min_pixels", config.min_pixels), ("max_pixels", config.max_pixels)) if v}
    return AsyncEngineArgs(
        model=config.model,
        dtype="float32" if (config.dtype == "auto" and on_cpu) else config.dtype,
        max_model_len=config.max_model_len,
        gpu_memory_utilization=config.gpu_memory_utilization,
        enable_lora=True,
        max_lora_rank=config.max_lora_rank,
        max_loras=config.max_loras,
        max_cpu_loras=config.max_loras * 2,
        worker_cls=worker_class(config, on_cpu),
        max_num_seqs=config.max_num_seqs,
        limit_mm_per_prompt={"image": 1},
        mm_processor_kwargs=mm_kwargs or None,
        enforce_eager=config.enforce_eager,
        enable_chunked_prefill=chunked_prefill,
        enable_prefix_caching=config.enable_prefix_caching,
        seed=config.seed,
        disable_log_stats=True,
        # Sampled-token logprobs before temperature and top-p: what the trainer recomputes to check
        # agreement, in either loss mode (trainer.logprobs). "processed_logprobs" would renormalise
        # over the top-p nucleus, which no trainer-side distribution reproduces.
        logprobs_mode="raw_logprobs",
        # Our methods in vLLM's worker, callable by name (the attention backend it chose).
        worker_extension_cls="rollout_server.worker_probe.WorkerProbe",
    )


def worker_class(config: EngineConfig, on_cpu: bool) -> str:
    """vLLM's worker class: on CPU, vLLM's CPU worker with a short wait for its next step, and the
    LoRA ops of rollout_server.cpu_lora with `cpu_lora_ops: grouped` (rollout_server.cpu_worker);
    elsewhere vLLM's own choice."""
    if not on_cpu:
        return "auto"
    grouped = config.cpu_lora_ops == "grouped"
    return f"rollout_server.cpu_worker.{'GroupedLoraCpuWorker' if grouped else 'QuietCpuWorker'}"


class AttentionUnreadable(RuntimeError):
    """The engine's attention backend could not be read: the server cannot say how image tokens
    attend, and a trainer that guessed would compute other logprobs than the ones served."""


@dataclass(frozen=True)
class AttentionReport:
    """What vLLM chose for the language model's attention, read from the running engine."""

    backend: str  # vLLM's name for it (CPU_ATTN, FLASH_ATTN, TRITON_ATTN, FLEX_ATTENTION, ...)
    image_attention: Literal["bidirectional", "causal"]


def image_attention_of(layers: list[list[Any]]) -> AttentionReport:
    """How image tokens attend, from every worker's `WorkerProbe.cxr_rl_attention_layers`:
    bidirectionally where the model asks for it and the chosen backend implements it; causally
    otherwise (vLLM's CPU backend takes the request and attends causally). Mixed answers are an
    error, not a guess."""
    if not layers:
        raise AttentionUnreadable("vLLM's worker reported no attention layers")
    backends = sorted({str(layer[1]) for layer in layers})
    modes = {"bidirectional" if layer[2] and layer[3] else "causal" for layer in layers}
    if len(modes) != 1:
        raise AttentionUnreadable(
            f"attention layers disagree on image attention (backends {', '.join(backends)}): some attend "
            "bidirectionally within an image, some causally; no trainer could match both"
        )
    return AttentionReport(backend="+".join(backends), image_attention=modes.pop())


class RolloutEngine:
    """One AsyncLLM per server process. `start()` builds it off the event loop (~25 s on CPU)."""

    def __init__(self, config: EngineConfig):
        self.config = config
        self.llm: Any = None
        self.attention: AttentionReport | None = None  # read from the engine at start

    @property
    def lora_dtype(self) -> Any:
        """The torch dtype vLLM holds LoRA weights in (its `lora_dtype`; "auto": the model's)."""
        return self.llm.vllm_config.lora_config.lora_dtype

    async def read_attention(self) -> AttentionReport:
        """Ask the running engine's workers which attention backend vLLM chose for each layer."""
        try:
            per_worker = await self.llm.collective_rpc("cxr_rl_attention_layers")
        except Exception as error:
            raise AttentionUnreadable(
                f"could not read the attention backend from vLLM's worker ({type(error).__name__}: {error})"
            ) from error
        return image_attention_of([layer for layers in per_worker for layer in layers])

    async def start(self) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(self.config.cpu_kv_cache_gib))))
        # vLLM (seconds to import) loads in the server process only, not where replicas are placed
        from vllm.v1.engine.async_llm import AsyncLLM

        self.llm = await asyncio.to_thread(AsyncLLM.from_engine_args, engine_args(self.config))
        self.attention = await self.read_attention()
        # The first request that asks for logprobs is slow (a one-off warm-up): pay it before /ready.
        await self.canary_logprobs(None)

    def shutdown(self) -> None:
        if self.llm is not None:
            self.llm.shutdown()
            self.llm = None

    @property
    def dead(self) -> bool:
        """True once the engine core process has died (vLLM's monitor thread notices at once; every
        request in flight then fails with `EngineDeadError`, and so would every later one)."""
        return self.llm is not None and self.llm.errored

    def unfinished_requests(self) -> int:
        """Requests inside vLLM (waiting or running); a request whose caller gave up is aborted."""
        return 0 if self.llm is None else self.llm.output_processor.get_num_unfinished_requests()

    async def generate(self, prompt: dict[str, Any], params: Any, lora_request: Any = None) -> Any:
        final = None
        with engine_alive():
            async for output in self.llm.generate(
                prompt, params, uuid.uuid4().hex, lora_request=lora_request
            ):
                final = output
        return final

    async def stream(
        self, prompt: dict[str, Any], params: Any, lora_request: Any = None
    ) -> AsyncIterator[Any]:
        """vLLM's outputs as they come (with `RequestOutputKind.DELTA`: the new tokens of each)."""
        with engine_alive():
            async for output in self.llm.generate(
                prompt, params, uuid.uuid4().hex, lora_request=lora_request
            ):
                yield output

    async def canary_logprobs(self, lora_request: Any, token_ids: list[int] | None = None) -> list[float]:
        """Prompt logprobs of a text-only prompt (default `CANARY_TOKEN_IDS`): each token's logprob
        after the ones before it, under the adapter of `lora_request` (None: the base model)."""
        # vLLM (seconds to import) loads in the server process only, not where replicas are placed
        from vllm import SamplingParams
        from vllm.exceptions import VLLMValidationError

        token_ids = list(CANARY_TOKEN_IDS if token_ids is None else token_ids)
        vocabulary = self.llm.vllm_config.model_config.get_vocab_size()
        outside = [token for token in token_ids if not 0 <= token < vocabulary]
        if outside:
            raise invalid(
                "canary.token_ids", f"token id {outside[0]} is out of vocabulary ({vocabulary} ids)"
            )
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        try:
            output = await self.generate({"prompt_token_ids": token_ids}, params, lora_request)
        except (ValueError, VLLMValidationError) as error:  # vLLM's own validation (a prompt too long)
            raise invalid("canary.token_ids", f"vLLM refused the canary prompt ({error})") from None
        return [
            entry[token].logprob
            for entry, token in zip(output.prompt_logprobs[1:], token_ids[1:], strict=True)
        ]

    async def add_lora(self, lora_request: Any) -> None:
        with engine_alive():
            added = await self.llm.add_lora(lora_request)
        if not added:
            raise RuntimeError(f"vLLM refused adapter {lora_request.lora_name}")

    async def remove_lora(self, lora_int_id: int) -> None:
        with engine_alive():
            await self.llm.remove_lora(lora_int_id)
