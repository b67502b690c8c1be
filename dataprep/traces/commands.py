"""`cxr-rl traces` (ask a teacher model for SFT targets) and `cxr-rl traces import` (validate
traces written elsewhere). Heavy imports stay inside the commands."""

import argparse
import os
from pathlib import Path

from shared.errors import UserError

SFT_FORMATS_HELP = "only_label, free_reasoning, reasoning_narrative, reasoning_a_sft"


def register(subparsers: argparse._SubParsersAction) -> None:
    traces = subparsers.add_parser(
        "traces",
        help="SFT targets from a teacher model over an OpenAI-compatible chat endpoint",
        description="Show a teacher model (a vLLM server or a hosted API speaking the OpenAI chat API) each "
        "X-ray of a manifest with its ground-truth labels, ask for the reasoning that reaches them as if "
        "independently, and write the traces that pass our parser and name exactly those labels as SFT "
        "targets. Each finished record is appended to --out at once; a rerun skips records already "
        "there and asks again for those rejected or failed before. Use 'traces import' for traces "
        "written elsewhere.",
    )
    _add_common(traces)
    traces.add_argument(
        "--endpoint",
        help="the teacher's OpenAI-compatible base URL (e.g. http://localhost:8000/v1) or its full "
        ".../chat/completions URL (required)",
    )
    traces.add_argument("--model", help="model name the endpoint serves (required)")
    traces.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="name of the environment variable holding the API key, sent as a bearer token (default: no key)",
    )
    traces.add_argument(
        "--format",
        default="free_reasoning",
        help=f"SFT output format the reasoning follows: {SFT_FORMATS_HELP}, or a name from "
        "--formats-file (default free_reasoning)",
    )
    traces.add_argument(
        "--formats-file", type=Path, help="YAML or JSON file of user prompt formats (name: instruction)"
    )
    traces.add_argument(
        "--reserve",
        type=Path,
        help="manifest of spare records (e.g. `cxr-rl data split`'s sft_reserve.jsonl): each record that gets "
        "no trace is replaced by the next spare, until --out holds as many records as --manifest",
    )
    traces.add_argument("--concurrency", type=int, default=8, help="requests in flight at once (default 8)")
    traces.add_argument(
        "--max-retries",
        type=int,
        default=5,
        help="retries per request on 429/500/502/503/504 and connection errors, with exponential "
        "backoff and jitter, honouring Retry-After (default 5)",
    )
    traces.add_argument(
        "--initial-backoff",
        type=float,
        default=1.0,
        help="first backoff in seconds, doubled per retry (default 1)",
    )
    traces.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default 120)")
    traces.add_argument("--temperature", type=float, help="sampling temperature (default: the endpoint's)")
    traces.add_argument("--max-tokens", type=int, help="most tokens per trace (default: the endpoint's)")
    traces.add_argument(
        "--max-image-side",
        type=int,
        default=1024,
        help="shrink images whose longer side is larger to this many pixels before sending; 0 sends "
        "them at full size (default 1024)",
    )
    traces.set_defaults(run=run_generate)

    actions = traces.add_subparsers(dest="traces_action", required=False, metavar="ACTION")
    imported = actions.add_parser(
        "import",
        help="validate an existing JSONL of traces and write the SFT manifest",
        description="Join each line of a trace JSONL file to its manifest record by id, check it as "
        "generated traces are checked (strict format, exactly the ground-truth labels), and write the "
        "manifest's records with a valid trace as an SFT manifest (first valid trace per id wins).",
    )
    imported.add_argument("--traces", type=Path, required=True, help="JSONL file of traces, one per line")
    _add_common(imported, required=True)
    imported.add_argument(
        "--text-field", default="text", help="field of a trace line holding the trace (default text)"
    )
    imported.add_argument(
        "--id-field", default="id", help="field of a trace line holding the record id (default id)"
    )
    imported.add_argument(
        "--format",
        default="free_reasoning",
        help=f"SFT output format the traces follow: {SFT_FORMATS_HELP}, or a name from --formats-file; "
        "a format without rationale (only_label) wants an empty <think></think> (default free_reasoning)",
    )
    imported.add_argument(
        "--formats-file", type=Path, help="YAML or JSON file of user prompt formats (name: instruction)"
    )
    imported.set_defaults(run=run_import)


def _add_common(parser: argparse.ArgumentParser, required: bool = False) -> None:
    note = "" if required else " (required)"
    parser.add_argument(
        "--manifest", type=Path, required=required, help=f"JSONL manifest of labelled X-rays{note}"
    )
    parser.add_argument(
        "--out", type=Path, required=required, help=f"SFT manifest to write, records with target{note}"
    )
    parser.add_argument(
        "--rejects",
        type=Path,
        help="JSONL of records that got no target, with the reason (default: beside --out, "
        "<name>.rejects.jsonl)",
    )


def run_generate(args: argparse.Namespace) -> int:
    # loaded when the command runs, so that `cxr-rl --help` stays fast
    from dataprep.traces.client import TEACHER_RETRY, TeacherSettings
    from dataprep.traces.generation import TraceRunConfig, generate_traces

    missing = [flag for flag in ("manifest", "out", "endpoint", "model") if getattr(args, flag) is None]
    if missing:
        raise UserError("missing " + ", ".join(f"--{flag}" for flag in missing))
    config = TraceRunConfig(
        manifest=args.manifest,
        out=args.out,
        reserve=args.reserve,
        rejects=args.rejects,
        format=args.format,
        formats_file=args.formats_file,
        concurrency=args.concurrency,
        max_image_side=args.max_image_side,
        teacher=TeacherSettings(
            endpoint=args.endpoint,
            model=args.model,
            api_key=_api_key(args.api_key_env),
            timeout_s=args.timeout,
            retry={
                "retries": args.max_retries,
                "backoff_s": args.initial_backoff,
                "max_backoff_s": TEACHER_RETRY.max_backoff_s,
            },
            temperature=args.temperature,
            max_tokens=args.max_tokens,
        ),
    )
    summary = generate_traces(config)
    print(summary.describe(config.out, config.rejects_path()))
    return 0


def run_import(args: argparse.Namespace) -> int:
    # loaded when the command runs, so that `cxr-rl --help` stays fast
    from dataprep.traces.generation import load_prompt_format
    from dataprep.traces.importing import import_traces
    from dataprep.traces.output import default_rejects_path

    rejects = args.rejects or default_rejects_path(args.out)
    output_format = load_prompt_format(args.format, args.formats_file)
    summary = import_traces(
        args.traces,
        args.manifest,
        args.out,
        rejects,
        text_field=args.text_field,
        id_field=args.id_field,
        rationale=output_format.rationale,
    )
    print(summary.describe(args.out, rejects))
    return 0


def _api_key(variable: str | None) -> str | None:
    if variable is None:
        return None
    key = os.environ.get(variable)
    if not key:
        raise UserError(f"--api-key-env {variable}: the environment variable is not set or empty")
    return key
