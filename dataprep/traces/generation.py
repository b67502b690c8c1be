"""Teacher traces: SFT targets written by a larger model that is shown an X-ray with its
ground-truth labels and asked for the reasoning that reaches them as if independently.

Every trace passes the same strict parser the rewards use and must name exactly the ground-truth
labels; the rest go to a rejects file with the reason. Finished records are appended to the output
as they arrive, so a rerun after an interruption skips what is done and loses nothing; records
rejected or failed last time are asked again.

With a reserve (`cxr-rl data split` writes `sft_reserve.jsonl`, patients of no other set), the
target is the manifest's size: each record that ends without a trace is replaced by the next
reserve record, in the reserve's order, until the output holds as many records as the manifest
or the reserve runs out. No more records are asked for than the target needs.
"""

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydantic import Field
from tqdm import tqdm

from dataprep.traces.client import TeacherClient, TeacherRequestFailed, TeacherSettings
from dataprep.traces.output import (
    JsonlAppender,
    TraceRejection,
    default_rejects_path,
    recover_output,
    relocate_image,
)
from dataprep.traces.prompts import image_data_uri, teacher_messages, teacher_prompt
from dataprep.traces.validation import check_trace
from shared.config import StrictModel
from shared.errors import UserError
from shared.manifest import ManifestRecord, read_manifest
from shared.prompts import PromptFormat, registry_with


class TraceRunConfig(StrictModel):
    manifest: Path
    out: Path
    reserve: Path | None = Field(
        None, description="records that replace the manifest's rejected ones, in order"
    )
    rejects: Path | None = Field(None, description='default: beside `out`, "<name>.rejects.jsonl"')
    format: str = Field(
        "free_reasoning", description="an SFT output format of shared.prompts, or a user format"
    )
    formats_file: Path | None = Field(
        None, description="user prompt formats (YAML or JSON: name -> instruction)"
    )
    concurrency: int = Field(8, ge=1)
    max_image_side: int = Field(1024, ge=0, description="0 sends the image at full size")
    teacher: TeacherSettings
    progress: bool = True

    def rejects_path(self) -> Path:
        return self.rejects or default_rejects_path(self.out)


@dataclass
class TraceSummary:
    written: int = 0  # records with a validated target written in this run
    skipped: int = 0  # already in the output from an earlier run
    rejected: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    missing: int = 0  # import only: manifest records no trace line gave a valid target
    replaced: int = 0  # reserve records written in place of rejected or failed ones
    short: int = 0  # records the output still lacks: the reserve ran out
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_reported: bool = False
    repaired_bytes: int = 0  # partial last line cut off the output

    def describe(self, out: Path, rejects: Path) -> str:
        lines = [
            f"{self.written} written, {self.skipped} skipped (already done), "
            f"{self.rejected.total()} rejected, {self.failed.total()} failed"
            + (f", {self.missing} without a valid trace" if self.missing else "")
        ]
        for name, counts in (("rejected", self.rejected), ("failed", self.failed)):
            if counts:
                lines.append(f"  {name}: " + ", ".join(f"{why} {n}" for why, n in counts.most_common()))
        if self.replaced:
            lines.append(f"  {self.replaced} rejected or failed records replaced from the reserve")
        if self.short:
            lines.append(f"  the reserve ran out: {self.short} records short of the manifest's size")
        if self.usage_reported:
            lines.append(f"  tokens: {self.prompt_tokens} prompt, {self.completion_tokens} completion")
        if self.repaired_bytes:
            lines.append(f"  repaired: cut a partial last line ({self.repaired_bytes} bytes) off {out}")
        lines.append(f"  output: {out}")
        if self.rejected or self.failed:
            lines.append(f"  rejects: {rejects}")
        return "\n".join(lines)


def load_prompt_format(name: str, formats_file: Path | None) -> PromptFormat:
    return registry_with(formats_file).get(name)


def read_unique_manifest(path: Path) -> list[ManifestRecord]:
    records = read_manifest(path)
    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            raise UserError(f"{path}: record id {record.id!r} appears more than once; ids must be unique")
        seen.add(record.id)
    return records


def check_distinct_paths(manifest: Path, out: Path, rejects: Path) -> None:
    resolved = {"--manifest": manifest.resolve(), "--out": out.resolve(), "--rejects": rejects.resolve()}
    if len(set(resolved.values())) < len(resolved):
        raise UserError(
            "--manifest, --out and the rejects file must be three different files "
            + ", ".join(f"{name} {path}" for name, path in resolved.items())
        )


def generate_traces(
    config: TraceRunConfig, transport: httpx.AsyncBaseTransport | None = None
) -> TraceSummary:
    """Ask the teacher for every manifest record not yet in `config.out`; return the counts."""
    rejects = config.rejects_path()
    check_distinct_paths(config.manifest, config.out, rejects)
    records = read_unique_manifest(config.manifest)
    reserve = _reserve(config, {record.id for record in records})
    output_format = load_prompt_format(config.format, config.formats_file)
    recovered = recover_output(config.out)
    known = {record.id for record in records + reserve}
    strays = [record.id for record in recovered.records if record.id not in known]
    if strays:
        raise UserError(
            f"{config.out} holds {len(strays)} record(s) that are not in {config.manifest} "
            f"(first: {strays[0]!r}); is it the output of another manifest?"
        )
    done = {record.id for record in recovered.records}
    candidates = [record for record in records + reserve if record.id not in done]
    summary = TraceSummary(skipped=len(done), repaired_bytes=recovered.dropped_bytes)
    need = max(0, len(records) - len(done)) if config.reserve else len(candidates)
    reserve_ids = {record.id for record in reserve}
    asyncio.run(_generate(candidates, need, config, output_format, summary, transport))
    summary.replaced = (
        sum(1 for record in read_manifest(config.out) if record.id in reserve_ids) if reserve else 0
    )
    summary.short = max(0, len(records) - len(done) - summary.written) if config.reserve else 0
    return summary


def _reserve(config: TraceRunConfig, manifest_ids: set[str]) -> list[ManifestRecord]:
    """The reserve's records, their image paths made to hold from the manifest's folder."""
    if config.reserve is None:
        return []
    reserve = read_unique_manifest(config.reserve)
    shared = [record.id for record in reserve if record.id in manifest_ids]
    if shared:
        raise UserError(
            f"--reserve {config.reserve} repeats {len(shared)} record(s) of the manifest, e.g. {shared[0]!r}"
        )
    return [relocate_image(record, config.reserve.parent, config.manifest.parent) for record in reserve]


async def _generate(
    candidates: list[ManifestRecord],
    need: int,
    config: TraceRunConfig,
    output_format: PromptFormat,
    summary: TraceSummary,
    transport: httpx.AsyncBaseTransport | None,
) -> None:
    """Ask for candidates in order, `concurrency` at a time, until `need` targets are written or
    the candidates run out; a worker starts a record only while written + in flight < need."""
    queue = iter(candidates)
    in_flight = 0
    with (
        JsonlAppender(config.out) as targets,
        JsonlAppender(config.rejects_path()) as rejects,
        tqdm(total=need, desc="teacher traces", unit="trace", disable=not config.progress) as bar,
    ):
        async with TeacherClient(config.teacher, transport=transport) as teacher:

            async def worker() -> None:
                nonlocal in_flight
                while summary.written + in_flight < need:
                    record = next(queue, None)
                    if record is None:
                        return
                    in_flight += 1
                    try:
                        outcome = await _ask_teacher(record, teacher, config, output_format, summary)
                    finally:
                        in_flight -= 1
                    if isinstance(outcome, TraceRejection):
                        counts = summary.rejected if outcome.outcome == "rejected" else summary.failed
                        counts[outcome.reason] += 1
                        rejects.append(outcome)
                    else:
                        targets.append(outcome)
                        summary.written += 1
                        bar.update(1)
                    bar.set_postfix(
                        written=summary.written,
                        rejected=summary.rejected.total(),
                        failed=summary.failed.total(),
                    )

            async with asyncio.TaskGroup() as tasks:
                for _ in range(min(config.concurrency, max(need, 0))):
                    tasks.create_task(worker())


async def _ask_teacher(
    record: ManifestRecord,
    teacher: TeacherClient,
    config: TraceRunConfig,
    output_format: PromptFormat,
    summary: TraceSummary,
) -> ManifestRecord | TraceRejection:
    if not record.labels:
        return TraceRejection(id=record.id, outcome="failed", reason="no ground-truth labels")
    try:
        image_uri = await asyncio.to_thread(
            image_data_uri, record.image_path(config.manifest.parent), config.max_image_side or None
        )
    except UserError as error:
        return TraceRejection(id=record.id, outcome="failed", reason="unreadable image", detail=str(error))
    messages = teacher_messages(image_uri, teacher_prompt(record.labels, output_format))
    try:
        reply = await teacher.complete(messages)
    except TeacherRequestFailed as failure:
        return TraceRejection(id=record.id, outcome="failed", reason=failure.reason, detail=failure.detail)
    if reply.prompt_tokens is not None or reply.completion_tokens is not None:
        summary.usage_reported = True
        summary.prompt_tokens += reply.prompt_tokens or 0
        summary.completion_tokens += reply.completion_tokens or 0
    verdict = check_trace(reply.text, record.labels, rationale=output_format.rationale)
    if not verdict.accepted:
        detail = verdict.detail
        if reply.finish_reason == "length":
            detail += " (the teacher stopped at max_tokens)"
        return TraceRejection(
            id=record.id, outcome="rejected", reason=verdict.reason, detail=detail, text=reply.text
        )
    moved = relocate_image(record, config.manifest.parent, config.out.parent)
    provenance = {"teacher_model": config.teacher.model, "trace_format": output_format.name}
    return moved.model_copy(
        update={"target": reply.text.strip(), "metadata": {**record.metadata, **provenance}}
    )
