"""Our OpenAI endpoint beside vLLM's own OpenAI server (`python -m vllm.entrypoints.openai.api_server`),
both up at once, on the same model, engine options and load: rounds of concurrent seeded chat
completions (one X-ray each, n samples, every completion run to max_tokens), the rounds alternating
between the two servers on the same X-rays and seeds. Tokens/s per round and the ratio of ours to
vLLM's on the same round; every request must be served."""

import asyncio
import base64
import contextlib
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import free_port

SETTLE_S = 3.0  # idle time before each timed round


def vllm_server_command(engine: Any, port: int) -> list[str]:
    """vLLM's own server with the engine options our server builds (rollout_server.engine.engine_args):
    the same dtype, context, LoRA slots, batch size, prefix caching, seed and worker (on CPU, the
    one with our LoRA ops); chunked prefill off on CPU (seeded requests kill the CPU engine otherwise)."""
    import json

    from rollout_server.engine import engine_args

    args = engine_args(engine)
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(args.model),
        "--host", "127.0.0.1", "--port", str(port), "--dtype", str(args.dtype),
        "--max-model-len", str(args.max_model_len), "--max-num-seqs", str(args.max_num_seqs),
        "--enable-lora", "--max-lora-rank", str(args.max_lora_rank), "--max-loras", str(args.max_loras),
        "--max-cpu-loras", str(args.max_cpu_loras), "--limit-mm-per-prompt", json.dumps({"image": 1}),
        "--seed", str(args.seed), "--gpu-memory-utilization", str(args.gpu_memory_utilization),
        "--disable-log-stats",
    ]  # fmt: skip
    command.append("--enable-prefix-caching" if args.enable_prefix_caching else "--no-enable-prefix-caching")
    command.append(
        "--enable-chunked-prefill" if args.enable_chunked_prefill else "--no-enable-chunked-prefill"
    )
    if args.enforce_eager:
        command.append("--enforce-eager")
    if args.mm_processor_kwargs:
        command += ["--mm-processor-kwargs", json.dumps(args.mm_processor_kwargs)]
    # The same LoRA ops as ours on CPU (rollout_server.cpu_lora): the servers are compared, not the ops.
    if args.worker_cls != "auto":
        command += ["--worker-cls", args.worker_cls]
    return command


class VllmServer:
    """vLLM's OpenAI server as a process of its own session (stopped with everything it started)."""

    def __init__(self, engine: Any, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / "vllm-server.log"
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(max(1, round(engine.cpu_kv_cache_gib)))}
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                vllm_server_command(engine, self.port),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def __enter__(self) -> "VllmServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout_s: float = 900.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
                raise RuntimeError(f"vLLM's server exited with code {self.process.returncode}:\n{tail}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            time.sleep(0.5)
        raise TimeoutError(f"vLLM's server not ready after {timeout_s:.0f} s")

    def stop(self) -> None:
        import signal

        if self.process.poll() is not None:
            return
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # the engine core and its workers
        self.process.wait(10)


@dataclass(frozen=True)
class ChatLoad:
    requests: int  # concurrent requests per round
    n: int
    max_tokens: int
    temperature: float
    top_p: float
    model: str  # the name both servers serve the base model under (vLLM's default: the --model path)


@dataclass
class ChatRound:
    server: str
    round: int
    seconds: float
    served: int  # requests answered 200 with every completion
    tokens: int  # completion tokens, from `usage`
    prompt_tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def chat_body(load: ChatLoad, image: bytes, seed: int) -> dict[str, Any]:
    url = f"data:image/jpeg;base64,{base64.b64encode(image).decode()}"
    return {
        "model": load.model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": "Describe the findings of this chest X-ray."},
                ],
            }
        ],
        "n": load.n,
        "max_tokens": load.max_tokens,
        "temperature": load.temperature,
        "top_p": load.top_p,
        "seed": seed,
        "ignore_eos": True,  # every completion runs max_tokens on both servers: same work, same length
    }


async def chat_round(
    name: str, url: str, load: ChatLoad, images: list[bytes], seed: int, index: int, token: str
) -> ChatRound:
    """One round on one server, over connections of its own: none left open by an earlier round."""
    import httpx

    bodies = [chat_body(load, image, seed + i) for i, image in enumerate(images)]
    limits = httpx.Limits(max_connections=load.requests, max_keepalive_connections=load.requests)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=1800, limits=limits, headers=headers) as http:
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(http.post(f"{url}/v1/chat/completions", json=body) for body in bodies), return_exceptions=True
        )
        seconds = time.perf_counter() - started
    served = tokens = prompt_tokens = 0
    for answer in answers:
        if isinstance(answer, Exception) or answer.status_code != 200:
            continue
        body = answer.json()
        if len(body["choices"]) == load.n:
            served += 1
        tokens += body["usage"]["completion_tokens"]
        prompt_tokens += body["usage"]["prompt_tokens"]
    return ChatRound(name, index, seconds, served, tokens, prompt_tokens)


async def measure_openai(
    servers: dict[str, str],
    load: ChatLoad,
    rounds: list[list[bytes]],
    warmup: list[bytes],
    seed: int,
    token: str,
) -> list[ChatRound]:
    """One warm-up round per server, then each round on both servers, the first of the pair
    alternating, so drift in the machine's load falls on both alike. Each run opens its own
    connections (keep-alive connections reused from a server's previous run made that run about
    twice as slow as one after the other server, whichever server it was) and starts after a pause,
    so the tail of one burst is not timed in the next."""
    names = list(servers)
    results: list[ChatRound] = []
    for name in names:
        await chat_round(name, servers[name], load, warmup, seed + 10_000_000, -1, token)
    for index, images in enumerate(rounds):
        order = names if index % 2 == 0 else names[::-1]
        for name in order:
            await asyncio.sleep(SETTLE_S)
            run = await chat_round(name, servers[name], load, images, seed + index * 1000, index, token)
            results.append(run)
    return results


def summarise_openai(runs: list[ChatRound], ours: str, theirs: str, load: ChatLoad) -> dict[str, Any]:
    by_server = {name: [run for run in runs if run.server == name] for name in (ours, theirs)}
    ratios = [
        a.tokens_per_s / b.tokens_per_s for a, b in zip(by_server[ours], by_server[theirs], strict=True)
    ]
    figures: dict[str, Any] = {
        "openai_over_vllm": round(statistics.median(ratios), 3),
        "openai_over_vllm_per_round": [round(ratio, 3) for ratio in ratios],
        "openai_requests_per_round": load.requests,
        "openai_n": load.n,
        "openai_rounds": len(ratios),
    }
    for label, name in (("ours", ours), ("vllm", theirs)):
        server_runs = by_server[name]
        figures[f"openai_{label}_tokens_per_s"] = round(
            statistics.median(r.tokens_per_s for r in server_runs), 1
        )
        figures[f"openai_{label}_tokens_per_s_per_round"] = [round(r.tokens_per_s, 1) for r in server_runs]
        figures[f"openai_{label}_served"] = sum(r.served for r in server_runs)
        figures[f"openai_{label}_prompt_tokens"] = sum(r.prompt_tokens for r in server_runs)
    figures["openai_all_served"] = all(r.served == load.requests for r in runs)
    return figures


def print_openai(figures: dict[str, Any], load: ChatLoad) -> None:
    total = figures["openai_rounds"] * load.requests
    print(
        f"\nOpenAI chat completions, {load.requests} concurrent seeded requests x n={load.n} x {load.max_tokens} "
        f"tokens per round, {figures['openai_rounds']} rounds each, alternating"
    )
    print(f"{'server':<22}{'tokens/s (median)':>20}{'requests served':>18}{'prompt tokens':>15}")
    for label, name in (("ours", "cxr-rl /v1"), ("vllm", "vLLM api_server")):
        print(
            f"{name:<22}{figures[f'openai_{label}_tokens_per_s']:>20.0f}"
            f"{figures[f'openai_{label}_served']:>12}/{total:<5}{figures[f'openai_{label}_prompt_tokens']:>15}"
        )
    print(
        f"ours / vLLM's: {figures['openai_over_vllm']:.3f} (median of per-round ratios "
        f"{figures['openai_over_vllm_per_round']}; target >= 0.95)"
    )


def openai_images(
    work: Path, requests: int, rounds: int, seed: int, size: int
) -> tuple[list[bytes], list[list[bytes]]]:
    """Distinct phantom X-rays: a warm-up set, then one set per round (the same for both servers)."""
    from benchmarks.common import phantom_xrays

    images = phantom_xrays(work / "phantoms-openai", requests * (rounds + 1), seed=seed + 7, size=size)
    sets = [images[start : start + requests] for start in range(0, len(images), requests)]
    return sets[0], sets[1:]


async def openai_comparison(
    ours_url: str, vllm_url: str, load: ChatLoad, work: Path, rounds: int, seed: int, size: int, token: str
) -> dict[str, Any]:
    warmup, round_sets = openai_images(work, load.requests, rounds, seed, size)
    servers = {"ours": ours_url, "vllm": vllm_url}
    runs = await measure_openai(servers, load, round_sets, warmup, seed, token)
    figures = summarise_openai(runs, "ours", "vllm", load)
    print_openai(figures, load)
    return figures
