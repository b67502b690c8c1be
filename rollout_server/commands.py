"""`cxr-rl serve`: the rollout server as a process."""

import argparse
import os
from pathlib import Path

from shared.config import load_config, parse_config
from shared.errors import UserError


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "serve",
        help="serve a model over HTTP: G sampled completions per X-ray, hot LoRA swaps",
        description=(
            "Start the rollout server: a vLLM engine behind an HTTP API (POST /v1/rollouts, "
            "POST /v1/chat/completions, /v1/adapters, /health, /ready, /metrics). Options given on the "
            "command line override those in --config."
        ),
    )
    parser.add_argument("--model", help="model folder (hub layout: config, weights, processor)")
    parser.add_argument("--config", help="YAML file of server options (see rollout_server/config.py)")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--data-root", help="folder that image paths in requests are relative to")
    parser.add_argument(
        "--api-key",
        "--api-token",
        dest="api_token",
        help="require this bearer token on /v1 endpoints, as vLLM's --api-key (or env CXR_RL_API_KEY); "
        "without one, adapter loads and deletes are refused",
    )
    parser.add_argument(
        "--served-model-name", help="the base model's name for OpenAI clients (default: the --model argument)"
    )
    parser.add_argument(
        "--adapter-root", help="folder that POST /v1/adapters may load adapters from by path (default: none)"
    )
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--max-model-len", type=int, help="context length (prompt + completion)")
    parser.add_argument("--gpu-memory-utilization", type=float, help="GPU: this server's share of GPU memory")
    parser.add_argument("--cpu-kv-cache-gib", type=float, help="CPU: KV cache size in GiB")
    parser.add_argument("--max-lora-rank", type=int)
    parser.add_argument("--max-loras", type=int, help="adapters resident at once")
    parser.add_argument("--min-pixels", type=int, help="Qwen-VL: fewest pixels per image (28x28 per token)")
    parser.add_argument("--max-pixels", type=int, help="Qwen-VL: most pixels per image (bounds memory)")
    parser.add_argument("--prompt-formats", help="YAML/JSON file of extra prompt formats (name: instruction)")
    parser.set_defaults(run=run)


def api_key_from_env() -> str | None:
    """The key from the environment: CXR_RL_API_KEY (as vLLM reads VLLM_API_KEY), or the older
    CXR_RL_API_TOKEN."""
    return os.environ.get("CXR_RL_API_KEY") or os.environ.get("CXR_RL_API_TOKEN")


def server_config_from_args(args: argparse.Namespace):
    # loaded when the command runs, so that `cxr-rl --help` stays fast
    from rollout_server.config import ServerConfig

    engine = {
        key: value
        for key, value in {
            "model": args.model,
            "dtype": args.dtype,
            "max_model_len": args.max_model_len,
            "gpu_memory_utilization": args.gpu_memory_utilization,
            "cpu_kv_cache_gib": args.cpu_kv_cache_gib,
            "max_lora_rank": args.max_lora_rank,
            "max_loras": args.max_loras,
            "min_pixels": args.min_pixels,
            "max_pixels": args.max_pixels,
        }.items()
        if value is not None
    }
    server = {
        key: value
        for key, value in {
            "host": args.host,
            "port": args.port,
            "data_root": args.data_root,
            "api_token": args.api_token or api_key_from_env(),
            "served_model_name": args.served_model_name,
            "adapter_root": args.adapter_root,
            "prompt_formats_file": args.prompt_formats,
        }.items()
        if value is not None
    }
    overrides = {**server, "engine": engine}
    if args.config:
        return load_config(args.config, ServerConfig, overrides=overrides)
    if not args.model:
        raise UserError("give --model DIR (or --config FILE with engine.model)")
    return parse_config(overrides, ServerConfig, source="command line")


def run(args: argparse.Namespace) -> int:
    config = server_config_from_args(args)
    if not (Path(config.engine.model) / "config.json").is_file():
        raise UserError(f"no model at {config.engine.model} (expected a folder with config.json)")
    # loaded when the command runs, so that `cxr-rl --help` stays fast
    from rollout_server.runner import serve_forever

    return serve_forever(config)  # 1 when the engine died (for a supervisor to restart the server)
