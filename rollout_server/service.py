"""The rollout server's work, apart from HTTP: sample G completions per X-ray on a chosen adapter
version, and load or unload adapter versions."""

import asyncio
import base64
import binascii
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rollout_server.adapters import AdapterRegistry, AdapterVersion
from rollout_server.config import ServerConfig
from rollout_server.engine import ENGINE_DEAD, RolloutEngine
from rollout_server.errors import RequestError, invalid
from rollout_server.inputs import PreparedPrompt, prepare_item
from rollout_server.metrics import ServerMetrics
from shared.chat import multimodal_placeholder_ids
from shared.prompts import PromptRegistry
from shared.schemas import (
    AdapterInfo,
    AdapterSelector,
    AdapterUpdate,
    Completion,
    RolloutRequest,
    RolloutResponse,
    RolloutResult,
    RolloutTimings,
    SamplingSettings,
    ServerInfo,
)


def default_adapter_dir() -> Path:
    shm = Path("/dev/shm")  # tmpfs where present: the file hop into vLLM costs little
    return Path(tempfile.mkdtemp(prefix="cxr-rl-adapters-", dir=shm if shm.is_dir() else None))


class RolloutService:
    def __init__(self, config: ServerConfig):
        self.config = config
        self._owned_adapter_dir: Path | None = None
        self.engine = RolloutEngine(config.engine)
        self.adapters = AdapterRegistry(
            self.engine,
            config.adapter_dir or self._temporary_adapter_dir(),
            config.engine.max_lora_rank,
            config.canary,
        )
        self.prompts = PromptRegistry()
        if config.prompt_formats_file:
            self.prompts.add_from_file(config.prompt_formats_file)
        self.metrics = ServerMetrics(engine_requests=self.engine.unfinished_requests)
        self.processor: Any = None
        self.placeholder_bias: dict[int, float] = {}
        self._started = False
        self.startup_error: str | None = None

    async def start(self) -> None:
        try:
            from transformers import AutoProcessor

            self.processor = await asyncio.to_thread(AutoProcessor.from_pretrained, self.config.engine.model)
            self.placeholder_bias = {
                token: -100.0 for token in multimodal_placeholder_ids(self.config.engine.model)
            }
            await self.engine.start()
            self._started = True
        except Exception as error:
            self.startup_error = f"{type(error).__name__}: {error}"
            raise

    @property
    def ready(self) -> bool:
        return self._started and not self.engine.dead

    @property
    def engine_dead(self) -> bool:
        return self.engine.dead

    def not_ready_reason(self) -> str:
        if self.engine.dead:
            return ENGINE_DEAD
        return self.startup_error or "the engine is still loading; poll /ready"

    def info(self) -> ServerInfo:
        import vllm
        from vllm.platforms import current_platform

        return ServerInfo(
            model=self.config.engine.model,
            platform="cpu" if current_platform.is_cpu() else "cuda",
            vllm_version=vllm.__version__,
            max_model_len=self.config.engine.max_model_len,
            max_lora_rank=self.config.engine.max_lora_rank,
            image_attention=self.engine.image_attention(),
        )

    def _temporary_adapter_dir(self) -> Path:
        self._owned_adapter_dir = default_adapter_dir()
        return self._owned_adapter_dir

    def shutdown(self) -> None:
        self._started = False
        self.engine.shutdown()
        if self._owned_adapter_dir is not None:  # adapters sent as bytes live only as long as we do
            shutil.rmtree(self._owned_adapter_dir, ignore_errors=True)

    # ------------------------------------------------------------------------------------------
    # Rollouts
    # ------------------------------------------------------------------------------------------
    def check_sampling(self, settings: SamplingSettings, items: int) -> None:
        limits, engine = self.config.limits, self.config.engine
        if items > limits.max_items:
            raise invalid("items", f"{items} items is over the limit of {limits.max_items} per request")
        if settings.n > limits.max_n:
            raise invalid("n", f"n={settings.n} is over the limit of {limits.max_n}")
        if settings.min_tokens > settings.max_tokens:
            raise invalid(
                "min_tokens", f"min_tokens={settings.min_tokens} is over max_tokens={settings.max_tokens}"
            )
        if settings.max_tokens >= engine.max_model_len:
            raise invalid(
                "max_tokens",
                f"max_tokens={settings.max_tokens} is not below max_model_len={engine.max_model_len}",
            )

    def prepare(self, request: RolloutRequest) -> list[PreparedPrompt]:
        self.check_sampling(request, len(request.items))
        return [
            prepare_item(item, index, self.processor, self.prompts, self.config.data_root, self.config.limits)
            for index, item in enumerate(request.items)
        ]

    async def rollouts(self, request: RolloutRequest) -> RolloutResponse:
        started = time.perf_counter()
        prepared = self.prepare(request)
        preprocess_s = (time.perf_counter() - started) / max(1, len(prepared))
        adapter = self.adapters.acquire(request.adapter)
        self.metrics.queue_depth.inc(len(prepared))
        try:
            results = await gather_or_cancel(
                [
                    self._sample(index, prompt, request, adapter, preprocess_s)
                    for index, prompt in enumerate(prepared)
                ]
            )
        finally:
            self.metrics.queue_depth.dec(len(prepared))
            await self.adapters.release(adapter)
        return RolloutResponse(results=list(results))

    async def _sample(
        self,
        index: int,
        prompt: PreparedPrompt,
        settings: SamplingSettings,
        adapter: AdapterVersion | None,
        preprocess_s: float,
    ) -> RolloutResult:
        from vllm.exceptions import VLLMValidationError

        try:
            params = self._sampling_params(settings, index)
        except (ValueError, VLLMValidationError) as error:
            raise invalid("sampling", str(error).splitlines()[0]) from None
        started = time.perf_counter()
        try:
            output = await self.engine.generate(
                prompt.engine_input(), params, adapter.lora_request() if adapter else None
            )
        except (ValueError, VLLMValidationError) as error:  # e.g. a prompt too long for the model
            raise invalid(f"items[{index}]", str(error).splitlines()[0]) from None
        return self._result(prompt, output, adapter, preprocess_s, time.perf_counter() - started)

    def _sampling_params(self, settings: SamplingSettings, index: int) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            output_kind=RequestOutputKind.FINAL_ONLY,  # streaming outputs of n > 1 arrive child by child
            n=settings.n,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.max_tokens,
            min_tokens=settings.min_tokens,
            logprobs=0,
            seed=None if settings.seed is None else settings.seed + index,  # items of a batch differ
            # A sampled image placeholder would be read as an image slot when the trainer re-runs the
            # sequence (a token/feature count mismatch); never sample one. Returned logprobs are raw.
            logit_bias=self.placeholder_bias or None,
        )

    def _result(
        self,
        prompt: PreparedPrompt,
        output: Any,
        adapter: AdapterVersion | None,
        preprocess_s: float,
        generate_s: float,
    ) -> RolloutResult:
        completions = [
            Completion(
                text=choice.text,
                token_ids=list(choice.token_ids),
                logprobs=[
                    step[token].logprob for step, token in zip(choice.logprobs, choice.token_ids, strict=True)
                ],
                finish_reason=choice.finish_reason,
                adapter_name=adapter.name if adapter else None,
                adapter_version=adapter.version if adapter else None,
            )
            for choice in sorted(output.outputs, key=lambda choice: choice.index)
        ]
        self.metrics.completions.inc(len(completions))
        self.metrics.tokens.inc(sum(len(c.token_ids) for c in completions))
        self.metrics.prompt_tokens.inc(len(output.prompt_token_ids))
        return RolloutResult(
            item_id=prompt.item_id,
            prompt_token_ids=list(output.prompt_token_ids),
            completions=completions,
            timings=RolloutTimings(
                preprocess_s=preprocess_s, generate_s=generate_s, total_s=preprocess_s + generate_s
            ),
        )

    # ------------------------------------------------------------------------------------------
    # Adapters
    # ------------------------------------------------------------------------------------------
    async def load_adapter_update(self, update: AdapterUpdate) -> AdapterInfo:
        """LoRA weights as bytes (from the trainer over Ray or HTTP)."""
        folder = self.adapters.staging_folder(update.name)
        (folder / "adapter_model.safetensors").write_bytes(update.safetensors)
        (folder / "adapter_config.json").write_text(json.dumps(update.adapter_config))
        return await self._load(
            update.name, folder, update.version, owned=True,
            expected_canary=update.canary_expected, canary_tolerance=update.canary_tolerance,
        )  # fmt: skip

    async def load_adapter_path(self, name: str, path: str, version: int | None) -> AdapterInfo:
        folder = Path(path)
        if not folder.is_dir():
            raise invalid("path", f"no adapter folder at {path}")
        return await self._load(name, folder, version, owned=False)

    async def _load(
        self,
        name: str,
        folder: Path,
        version: int | None,
        owned: bool,
        expected_canary: list[float] | None = None,
        canary_tolerance: float = 1e-3,
    ) -> AdapterInfo:
        try:
            adapter = await self.adapters.load(
                name, folder, version, owned, expected_canary, canary_tolerance
            )
        except RequestError:
            if owned:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        self.metrics.adapter_version.labels(adapter=name).set(adapter.version)
        self.metrics.swap_seconds.observe(self.adapters.swap_seconds[-1])
        return adapter.info()


async def gather_or_cancel(coroutines: list[Any]) -> list[Any]:
    """`asyncio.gather`, except that when one item fails (or the caller is cancelled) the others are
    cancelled and awaited before the error goes up. vLLM aborts a cancelled request, so nothing of
    the batch still generates on an adapter version that the caller then releases (and may unload)."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()  # no-op for the finished ones
        await asyncio.wait(tasks)
    for task in tasks:  # the first real failure in batch order; cancelled siblings are not one
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()
    return [task.result() for task in tasks]


def decode_adapter_b64(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise invalid("safetensors_b64", "not valid base64") from None


def selector_from_model_name(model: str | None) -> AdapterSelector:
    """OpenAI `model` field: "base" (or empty) for no adapter, "NAME" for its latest, "NAME:VERSION"."""
    if not model or model == "base":
        return AdapterSelector()
    name, _, version = model.partition(":")
    if version and not version.isdigit():
        raise invalid("model", f"version in {model!r} is not a number")
    return AdapterSelector(name=name, version=int(version) if version else None)
