"""`cxr-rl parse` and `cxr-rl reward [serve|swap|frequencies]`. Heavy imports stay inside the commands."""

import argparse
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shared.config import describe_validation_error, read_yaml_mapping
from shared.errors import UserError

REWARD_NAME_HELP = "reward: 'hard', 'nuanced' or a plugin's import path 'package.module:Class'"


def register(subparsers: argparse._SubParsersAction) -> None:
    parse = subparsers.add_parser(
        "parse",
        help="read completions' labels (JSONL on stdin -> JSONL on stdout)",
        description='Read JSONL lines {"text": ...} on stdin; write one JSONL line per input with valid '
        "(whether the answer parsed: contract kept and a label named), labels (CheXpert order), invalid, "
        "duplicates, negated, extraneous, no_finding_conflict and problems (why it did not parse).",
    )
    parse.add_argument(
        "--mode",
        choices=["strict", "lenient"],
        default="strict",
        help="strict: the paper's contract, labels only from the one solution block (default); lenient: "
        "also tags in any case, unclosed or repeated blocks, label lists outside the tags, hedged entries",
    )
    parse.add_argument(
        "--tags",
        choices=["chexreason", "nv-reason"],
        default="chexreason",
        help="tag names: chexreason = <think>/<solution> (default), nv-reason = <think>/<answer>",
    )
    parse.set_defaults(run=run_parse)

    reward = subparsers.add_parser(
        "reward",
        help="score completions with a reward, serve a reward over HTTP, or swap the training reward",
        description='Without an action: read JSONL lines {"text": ..., "labels": [...], "n_tokens": N} on '
        'stdin and write {"reward": R, "components": {...}} per line, carrying the reward\'s state (the '
        "nuanced window) from line to line as training does.",
    )
    reward.add_argument("--name", help=REWARD_NAME_HELP)
    reward.add_argument(
        "--config", help="YAML file with the reward's settings (e.g. nuanced label_frequencies)"
    )
    reward.set_defaults(run=run_score)
    actions = reward.add_subparsers(dest="reward_action", required=False, metavar="ACTION")

    serve = actions.add_parser(
        "serve",
        help="serve a reward over HTTP (POST /v1/rewards, GET /health)",
        description="Serve one reward as an HTTP service speaking rewards/PROTOCOL.md.",
    )
    serve.add_argument("--name", required=True, help=REWARD_NAME_HELP)
    serve.add_argument("--config", help="YAML file with the reward's settings")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8100, help="port to listen on (default 8100)")
    serve.set_defaults(run=run_serve)

    swap = actions.add_parser(
        "swap",
        help="switch the running training's reward from its next batch on",
        description="Connect to the running Ray cluster and tell the reward router (actor 'reward-router') "
        "to send the next batches to another reward.",
    )
    swap.add_argument(
        "--name", required=True, help=REWARD_NAME_HELP + ", or the http(s) URL of a reward service"
    )
    swap.add_argument("--config", help="YAML file with the new reward's settings")
    swap.add_argument(
        "--address", default="auto", help="Ray cluster address (default: auto, the local cluster)"
    )
    swap.add_argument(
        "--namespace",
        default="cxr-rl",
        help="Ray namespace the training runs in (default: cxr-rl, the run config's `namespace` default)",
    )
    swap.set_defaults(run=run_swap)

    frequencies = actions.add_parser(
        "frequencies",
        help="derive the nuanced reward's label frequencies from a label CSV or a training manifest",
        description="Count the share of images with each CheXpert label positive and write it as a nuanced "
        "reward config (YAML: label_frequencies). Without a source: CheXpert's train.csv as torchxrayvision "
        "ships it, which gives the shipped default.",
    )
    source = frequencies.add_mutually_exclusive_group()
    source.add_argument(
        "--csv",
        help="a CheXpert-style label CSV (.csv or .csv.gz): CheXpert's train.csv (frontal rows) or "
        "MIMIC-CXR's mimic-cxr-2.0.0-chexpert.csv",
    )
    source.add_argument("--manifest", help="a training manifest (JSONL, as `cxr-rl data split` writes)")
    frequencies.add_argument("--out", help="write the YAML here (default: stdout)")
    frequencies.set_defaults(run=run_frequencies)


def read_reward_config(path: str | None) -> dict[str, Any] | None:
    return None if path is None else read_yaml_mapping(path, "reward config", "reward settings")


def jsonl_lines(stream: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a bad line is an error naming its number."""
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(
                f"stdin line {number}: not valid JSON ({error.msg} at column {error.colno})"
            ) from None
        if not isinstance(value, dict):
            raise UserError(f"stdin line {number}: expected a JSON object, got {type(value).__name__}")
        yield number, value


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def run_parse(args: argparse.Namespace) -> int:
    # loaded when the command runs, so that `cxr-rl --help` stays fast
    from rewards.parsing import ParserConfig, parse_completion

    config = ParserConfig(mode=args.mode, tags=args.tags)
    for number, record in jsonl_lines(sys.stdin):
        text = record.get("text")
        if not isinstance(text, str):
            raise UserError(f"stdin line {number}: field 'text' must be a string")
        _emit(parse_completion(text, config).to_dict())
    return 0


def run_score(args: argparse.Namespace) -> int:
    # loaded when the command runs, so that `cxr-rl --help` stays fast
    from pydantic import ValidationError

    from rewards.protocol import score_request
    from rewards.registry import load_reward
    from shared.schemas import RewardItem, RewardRequest

    if not args.name:
        raise UserError("give --name (hard, nuanced or package.module:Class), or an action: serve, swap")
    reward = load_reward(args.name, read_reward_config(args.config))
    state = None
    for number, record in jsonl_lines(sys.stdin):
        try:
            item = RewardItem.model_validate(record)
        except ValidationError as error:
            raise UserError(f"stdin line {number}: {describe_validation_error(error)}") from None
        result = score_request(reward, RewardRequest(batch_id=f"line-{number}", items=[item], state=state))
        state = result.state
        _emit({"reward": result.totals[0], "components": result.components[0]})
    return 0


def run_serve(args: argparse.Namespace) -> int:
    # loaded when the command runs, so that `cxr-rl --help` stays fast
    from rewards.http_service import serve
    from rewards.registry import load_reward

    reward = load_reward(args.name, read_reward_config(args.config))
    print(
        f"serving reward {reward.name!r} {reward.version} on http://{args.host}:{args.port}", file=sys.stderr
    )
    serve(reward, host=args.host, port=args.port)
    return 0


def check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Ray retries an unreachable GCS address for minutes; a host:port that refuses a TCP
    connection is reported at once instead."""
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not colon or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise UserError(f"no running Ray cluster at {address!r}: {error}") from None


def run_swap(args: argparse.Namespace) -> int:
    # loaded when the command runs, so that `cxr-rl --help` stays fast
    import ray

    from rewards.router import swap_reward
    from shared.ray_calls import connect_to_cluster

    config = read_reward_config(args.config)
    check_reachable(args.address)
    try:
        connect_to_cluster(args.address, args.namespace, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise UserError(f"no running Ray cluster at {args.address!r}: {str(error).splitlines()[0]}") from None
    try:
        answer = swap_reward(args.name, config, namespace=args.namespace)
    finally:
        ray.shutdown()
    _emit(answer)
    return 0


def run_frequencies(args: argparse.Namespace) -> int:
    # loaded when the command runs, so that `cxr-rl --help` stays fast
    from rewards.label_frequencies import (
        frequencies_from_csv,
        frequencies_from_manifest,
        torchxrayvision_chexpert_csv,
    )
    from shared.atomic_files import write_atomically

    if args.manifest:
        table = frequencies_from_manifest(Path(args.manifest))
    else:
        table = frequencies_from_csv(Path(args.csv) if args.csv else torchxrayvision_chexpert_csv())
    if args.out:
        write_atomically(Path(args.out), table.to_yaml())
    else:
        sys.stdout.write(table.to_yaml())
    print(
        f"{table.source}: {table.images:,} images, {table.no_positive:.1%} with no positive label"
        + (f"; wrote {args.out}" if args.out else ""),
        file=sys.stderr,
    )
    return 0
