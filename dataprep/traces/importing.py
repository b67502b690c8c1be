"""Importing traces written elsewhere (another tool's JSONL of teacher answers): each line is
joined to its manifest record by id and checked as generated traces are; the SFT manifest and
the rejects file are written whole, atomically."""

import json
from pathlib import Path

from tqdm import tqdm

from dataprep.traces.generation import TraceSummary, check_distinct_paths, read_unique_manifest
from dataprep.traces.output import TraceRejection, default_rejects_path, relocate_image, write_rejections
from dataprep.traces.validation import check_trace
from shared.errors import UserError
from shared.manifest import ManifestRecord, write_manifest


def import_traces(
    traces: Path,
    manifest: Path,
    out: Path,
    rejects: Path | None = None,
    text_field: str = "text",
    id_field: str = "id",
    progress: bool = True,
    rationale: bool = True,
) -> TraceSummary:
    """Write `out`: the manifest's records that have a valid trace in `traces`, in manifest order,
    each with the first valid trace for its id as target. Lines that give none go to `rejects`."""
    rejects = rejects or default_rejects_path(out)
    check_distinct_paths(manifest, out, rejects)
    if traces.resolve() in {out.resolve(), rejects.resolve()}:
        raise UserError(f"--traces {traces} must not be the output or the rejects file")
    if not traces.is_file():
        raise UserError(f"trace file not found: {traces}")
    records = {record.id: record for record in read_unique_manifest(manifest)}
    accepted: dict[str, ManifestRecord] = {}
    rejections: list[TraceRejection] = []
    summary = TraceSummary()
    has_text_field = False
    with traces.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(
            tqdm(lines, desc="importing traces", unit="line", disable=not progress), 1
        ):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                item = None
                problem = f"not valid JSON ({error.msg})"
            else:
                problem = "" if isinstance(item, dict) else "not a JSON object"
            if not problem:
                has_text_field |= text_field in item
                problem = _missing_field(item, id_field, text_field)
            if problem:
                rejections.append(
                    TraceRejection(
                        id="", outcome="rejected", reason="unreadable line", detail=problem, line=number
                    )
                )
                continue
            trace_id, text = str(item[id_field]), item[text_field]
            record = records.get(trace_id)
            reason, detail = "", ""
            if record is None:
                reason, detail = "unknown id", f"{trace_id!r} is not in {manifest}"
            elif trace_id in accepted:
                reason, detail = "duplicate id", "a valid trace for this id came on an earlier line"
            else:
                verdict = check_trace(text, record.labels, rationale=rationale)
                reason, detail = verdict.reason, verdict.detail
            if reason:
                rejections.append(
                    TraceRejection(
                        id=trace_id, outcome="rejected", reason=reason, detail=detail, text=text, line=number
                    )
                )
                continue
            moved = relocate_image(record, manifest.parent, out.parent)
            accepted[trace_id] = moved.model_copy(
                update={"target": text.strip(), "metadata": {**record.metadata, "trace_source": traces.name}}
            )
    if not has_text_field:
        raise UserError(
            f"{traces}: no line has a {text_field!r} field; name the trace text's field with --text-field"
        )
    write_manifest([accepted[i] for i in records if i in accepted], out)
    write_rejections(rejections, rejects)
    summary.written = len(accepted)
    summary.missing = len(records) - len(accepted)
    for rejection in rejections:
        summary.rejected[rejection.reason] += 1
    return summary


def _missing_field(item: dict, id_field: str, text_field: str) -> str:
    if not isinstance(item.get(id_field), str | int):
        return f"no {id_field!r} field (a string or a number)"
    if not isinstance(item.get(text_field), str):
        return f"no {text_field!r} field (a string)"
    return ""
