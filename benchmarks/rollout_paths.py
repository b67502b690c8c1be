"""The ways of sampling rollouts that `benchmarks/rollout.py` compares, each timing one batch of
X-rays from their bytes to token ids: vLLM's engine in-process, our HTTP API, transformers
`generate`; and adapter swaps against a running server."""

import asyncio
import base64
import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.images import decode_xray


@dataclass(frozen=True)
class Sampling:
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    prompt_format: str


@dataclass(frozen=True)
class ImageSet:
    batch: int
    repeat: int
    images: list[bytes]
    seed: int  # item i is sampled with seed + i, on every path that takes seeds


@dataclass
class BatchRun:
    batch: int
    seconds: float
    completions: int
    tokens: int
    samples: list[list[int]]  # token ids of every completion, item-major
    engine_seconds: float = 0.0  # HTTP: the slowest item's time inside the server's engine
    front_cpu_seconds: float = 0.0  # vLLM paths: CPU time of the processes in front of the engine core


def batch_run(
    image_set: ImageSet, seconds: float, samples: list[list[int]], engine_s: float = 0.0, cpu_s: float = 0.0
) -> BatchRun:
    tokens = sum(len(sample) for sample in samples)
    return BatchRun(image_set.batch, seconds, len(samples), tokens, samples, engine_s, cpu_s)


class FrontCpu:
    """CPU seconds (user + system) of the processes in front of vLLM's engine core: this one (the
    client, or the in-process engine's front end) and, for HTTP, the server's. Unlike wall time,
    this barely moves when other work shares the machine, so it isolates what the HTTP layer costs."""

    def __init__(self, *pids: int):
        import psutil

        self.processes = [psutil.Process(pid) for pid in (os.getpid(), *pids)]

    def read(self) -> float:
        return sum(sum(process.cpu_times()[:2]) for process in self.processes)


def prompt_text(processor: Any, prompt_format: str) -> str:
    from shared.chat import render_prompt
    from shared.prompts import PromptRegistry, user_messages

    return render_prompt(processor, user_messages(PromptRegistry().get(prompt_format)))


class DirectEnginePath:
    """vLLM's AsyncLLM in this process, as the server builds it, fed what the server feeds it."""

    name = "vllm direct"

    def __init__(self, engine: Any, sampling: Sampling):
        self.engine, self.sampling = engine, sampling
        self.llm: Any = None
        self.prompt = ""
        self.cpu = FrontCpu()

    async def start(self) -> None:
        from transformers import AutoProcessor
        from vllm.v1.engine.async_llm import AsyncLLM

        from rollout_server.engine import engine_args

        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(self.engine.cpu_kv_cache_gib))))
        processor = await asyncio.to_thread(AutoProcessor.from_pretrained, self.engine.model)
        self.prompt = prompt_text(processor, self.sampling.prompt_format)
        building = asyncio.ensure_future(
            asyncio.to_thread(AsyncLLM.from_engine_args, engine_args(self.engine))
        )
        try:
            self.llm = await asyncio.shield(building)
        except asyncio.CancelledError:  # a thread cannot be stopped: let it finish, then stop its engine
            with contextlib.suppress(Exception):
                (await building).shutdown()
            raise

    async def shutdown(self) -> None:
        if self.llm is not None:
            self.llm.shutdown()
            self.llm = None

    async def _generate(self, index: int, image: Any, seed: int) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            output_kind=RequestOutputKind.FINAL_ONLY,
            n=self.sampling.n,
            temperature=self.sampling.temperature,
            top_p=self.sampling.top_p,
            max_tokens=self.sampling.max_tokens,
            logprobs=0,
            seed=seed,
        )
        prompt = {"prompt": self.prompt, "multi_modal_data": {"image": image}}
        final = None
        async for output in self.llm.generate(prompt, params, f"bench-{seed}-{index}-{time.time_ns()}"):
            final = output
        return final

    async def run(self, image_set: ImageSet) -> BatchRun:
        started, cpu = time.perf_counter(), self.cpu.read()
        images = [decode_xray(data) for data in image_set.images]
        outputs = await asyncio.gather(
            *(self._generate(i, image, image_set.seed + i) for i, image in enumerate(images))
        )
        seconds = time.perf_counter() - started
        samples = [
            list(choice.token_ids)
            for output in outputs
            for choice in sorted(output.outputs, key=lambda choice: choice.index)
        ]
        return batch_run(image_set, seconds, samples, cpu_s=self.cpu.read() - cpu)


class HttpPath:
    """Our API: the batch as concurrent POST /v1/rollouts of `items_per_request` X-rays each."""

    def __init__(
        self,
        name: str,
        client: Any,
        server_pid: int,
        sampling: Sampling,
        items_per_request: int,
        adapter: Any = None,
    ):
        from shared.schemas import AdapterSelector

        self.name, self.client, self.sampling = name, client, sampling
        self.items_per_request = items_per_request
        self.adapter = adapter or AdapterSelector()
        self.cpu = FrontCpu(server_pid)

    async def run(self, image_set: ImageSet) -> BatchRun:
        from shared.schemas import ImageRef, RolloutItem, RolloutRequest

        started, cpu = time.perf_counter(), self.cpu.read()
        chunk, s = self.items_per_request, self.sampling
        requests = [
            RolloutRequest(
                items=[
                    RolloutItem(item_id=str(start + i), image=ImageRef(b64=base64.b64encode(data).decode()),
                                prompt_format=s.prompt_format)
                    for i, data in enumerate(image_set.images[start : start + chunk])
                ],
                n=s.n, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
                seed=image_set.seed + start,  # the server adds each item's index, as the direct path does
                adapter=self.adapter,
            )
            for start in range(0, len(image_set.images), chunk)
        ]  # fmt: skip
        responses = await asyncio.gather(*(self.client.rollouts(request) for request in requests))
        seconds = time.perf_counter() - started
        results = [result for response in responses for result in response.results]
        samples = [completion.token_ids for result in results for completion in result.completions]
        engine_s = max(result.timings.generate_s for result in results)
        return batch_run(image_set, seconds, samples, engine_s, self.cpu.read() - cpu)


def until_stop(tokens: list[int], stop_ids: set[int]) -> list[int]:
    """A generated row cut after its first stop token (the rest is padding); vLLM's token ids
    also end with the stop token."""
    for position, token in enumerate(tokens):
        if token in stop_ids:
            return tokens[: position + 1]
    return tokens


class TransformersPath:
    """transformers `generate` on the same model, prompts and sampling settings (no vLLM)."""

    name = "transformers"

    def __init__(self, model_dir: Path, sampling: Sampling, threads: int | None = None):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if threads:
            torch.set_num_threads(threads)
        self.sampling = sampling
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32  # as vLLM's "auto" on CPU
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.processor.tokenizer.padding_side = "left"
        self.model = (
            AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        )
        self.prompt = prompt_text(self.processor, sampling.prompt_format)
        eos = self.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos])
        self.pad = self.processor.tokenizer.pad_token_id

    async def run(self, image_set: ImageSet) -> BatchRun:
        import torch

        started, s = time.perf_counter(), self.sampling
        images = [decode_xray(data) for data in image_set.images]
        inputs = self.processor(
            text=[self.prompt] * len(images),
            images=[[image] for image in images],
            return_tensors="pt",
            padding=True,
        ).to(self.device, dtype=self.model.dtype)  # casts the pixel values only
        torch.manual_seed(image_set.seed)
        with torch.inference_mode():
            sequences = self.model.generate(
                **inputs, do_sample=True, temperature=s.temperature, top_p=s.top_p,
                top_k=0,  # vLLM samples from the whole vocabulary; transformers' default is 50
                max_new_tokens=s.max_tokens, num_return_sequences=s.n, pad_token_id=self.pad,
            )  # fmt: skip
        generated = sequences[:, inputs["input_ids"].shape[1] :].tolist()
        seconds = time.perf_counter() - started
        return batch_run(image_set, seconds, [until_stop(row, self.eos) for row in generated])


def same_samples(first: list[BatchRun], second: list[BatchRun]) -> float:
    """Share of completions with identical token ids on two paths (same seeds, same engine)."""
    pairs = [
        (a, b)
        for run_a, run_b in zip(first, second, strict=True)
        for a, b in zip(run_a.samples, run_b.samples, strict=True)
    ]
    return round(sum(a == b for a, b in pairs) / len(pairs), 4)


async def swap_histogram(url: str) -> tuple[float, float]:
    """(sum of seconds, count) of the server's adapter swap histogram."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}/metrics")).text
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "cxr_rl_adapter_swap_seconds"
        for sample in family.samples
    }
    return values.get("cxr_rl_adapter_swap_seconds_sum", 0.0), values.get(
        "cxr_rl_adapter_swap_seconds_count", 0.0
    )


async def measure_swaps(client: Any, url: str, updates: list[Any], untimed: int) -> dict[str, Any]:
    """Post each adapter update in turn (a new version of one adapter each time); time each call."""
    from benchmarks.common import percentile

    for update in updates[:untimed]:
        await client.load_adapter(update)
    seconds_before, count_before = await swap_histogram(url)
    times, deltas = [], []
    for update in updates[untimed:]:
        started = time.perf_counter()
        info = await client.load_adapter(update)
        times.append(time.perf_counter() - started)
        deltas.append(info.canary_delta)
    if not times:
        return {}
    if any(delta is None for delta in deltas):
        raise RuntimeError("the server did not run its canary on every swap (is canary off in its config?)")
    seconds_after, count_after = await swap_histogram(url)
    return {
        "swaps": len(times),
        "swap_ms_p50": round(1000 * percentile(times, 50), 2),
        "swap_ms_p95": round(1000 * percentile(times, 95), 2),
        "swap_ms_max": round(1000 * max(times), 2),
        "swap_server_ms_mean": round(
            1000 * (seconds_after - seconds_before) / (count_after - count_before), 2
        ),
        "swap_canary_delta_min": min(deltas),
    }
