"""The rollout server's work, apart from HTTP: sample G completions per X-ray on a chosen adapter
version, and load or unload adapter versions."""

import asyncio
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
from rollout_server.inputs import PreparedPrompt, prepare_prompts, rollout_inputs
from rollout_server.metrics import ServerMetrics
from shared.chat import multimodal_placeholder_ids
from shared.prompts import PromptRegistry
from shared.schemas import (
    AdapterInfo,
    AdapterUpdate,
    CanaryCheck,
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
            # transformers, like vLLM, loads in the server process only, not where replicas are placed
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
        # vLLM (seconds to import) loads in the server process only, not where replicas are placed
        import vllm
        from vllm.platforms import current_platform

        return ServerInfo(
            model=self.config.engine.model,
            platform="cpu" if current_platform.is_cpu() else "cuda",
            vllm_version=vllm.__version__,
            max_model_len=self.config.engine.max_model_len,
            max_lora_rank=self.config.engine.max_lora_rank,
            attention_backend=self.engine.attention.backend,
            image_attention=self.engine.attention.image_attention,
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
        config = self.config
        inputs = rollout_inputs(request.items)
        return prepare_prompts(inputs, self.processor, self.prompts, config.data_root, config.limits, "items")

    async def rollouts(self, request: RolloutRequest) -> RolloutResponse:
        started = time.perf_counter()
        prepared = await asyncio.to_thread(self.prepare, request)  # decoding X-rays: off the event loop
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
        # vLLM (seconds to import) loads in the server process only, not where replicas are placed
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
        # vLLM (seconds to import) loads in the server process only, not where replicas are placed
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
        """LoRA weights as bytes (from the trainer over Ray)."""
        folder = self.adapters.staging_folder(update.name)
        (folder / "adapter_model.safetensors").write_bytes(update.safetensors)
        (folder / "adapter_config.json").write_text(json.dumps(update.adapter_config))
        return await self.load_staged_adapter(update.name, folder, update.version, update.canary)

    async def load_staged_adapter(
        self,
        name: str,
        folder: Path,
        version: int | None = None,
        canary: CanaryCheck | None = None,
        idempotency_key: str | None = None,
    ) -> AdapterInfo:
        """An adapter's files written into a staging folder of ours (an upload); the folder is moved."""
        return await self._load(
            name, folder, version, owned=True, canary=canary, idempotency_key=idempotency_key
        )

    async def load_adapter_path(
        self, name: str, path: str, version: int | None, idempotency_key: str | None = None
    ) -> AdapterInfo:
        """A folder on this machine, only from under the configured adapter root."""
        root = self.config.adapter_root
        if root is None:
            raise RequestError(
                403, "path", "this server has no adapter root (--adapter-root) to load from; upload the "
                "adapter's files to POST /v1/adapters/{name}/versions instead",
            )  # fmt: skip
        root = root.resolve()
        folder = (root / path).resolve()  # an absolute path stays itself; links and `..` are followed
        if not folder.is_relative_to(root):
            raise RequestError(403, "path", f"{path!r} is outside the adapter root")
        try:
            found = folder.is_dir()
        except OSError as error:  # a name too long, say
            raise invalid("path", f"not a usable path ({error.strerror})") from None
        if not found:
            raise invalid("path", f"no adapter folder at {path!r} under the adapter root")
        return await self._load(name, folder, version, owned=False, idempotency_key=idempotency_key)

    async def _load(
        self,
        name: str,
        folder: Path,
        version: int | None,
        owned: bool,
        canary: CanaryCheck | None = None,
        idempotency_key: str | None = None,
    ) -> AdapterInfo:
        try:
            adapter, repeated = await self.adapters.load(
                name, folder, version, owned, canary, idempotency_key
            )
        except RequestError:
            if owned:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        if repeated:  # a client's retry of a load already done: nothing was loaded
            if owned:
                shutil.rmtree(folder, ignore_errors=True)
            return adapter.info()
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
