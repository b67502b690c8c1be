"""The files trace generation writes as it goes: the SFT manifest, one finished record per line
appended and flushed at once (so an interrupted run keeps everything it wrote), and a log of
rejected and failed records. A rerun recovers what the output already holds; a partial last line
left by a crash is cut off (and reported), a broken line anywhere else stops the run."""

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ValidationError

from shared.atomic_files import write_atomically
from shared.config import StrictModel, describe_validation_error
from shared.errors import UserError
from shared.manifest import ManifestRecord


class TraceRejection(StrictModel):
    """One line of the rejects file: a record that got no target, and why."""

    id: str
    outcome: Literal["rejected", "failed"]  # rejected: a trace came back but is unusable
    reason: str
    detail: str = ""
    text: str | None = None  # the teacher's trace, when there was one
    line: int | None = None  # line of the imported trace file


def default_rejects_path(out: Path) -> Path:
    return out.with_name(out.name.removesuffix(".jsonl") + ".rejects.jsonl")


@dataclass(frozen=True, slots=True)
class RecoveredOutput:
    records: list[ManifestRecord]
    dropped_bytes: int  # size of the partial last line cut off the file


def recover_output(path: Path) -> RecoveredOutput:
    """Read the records an earlier run finished; cut off a partial or corrupt last line."""
    if not path.exists():
        return RecoveredOutput([], 0)
    if not path.is_file():
        raise UserError(f"output {path} is not a file")
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # tail: bytes after the last newline (a crash's remnant)
    records: list[ManifestRecord] = []
    seen: set[str] = set()
    kept = 0
    for number, raw in enumerate(complete, start=1):
        if raw.strip():
            try:
                record = _read_line(raw)
            except ValueError as error:
                if number == len(complete) and not tail.strip():
                    break  # the last line, written when the run died: repaired below
                raise UserError(
                    f"{path}:{number}: {error}; only a broken last line is repaired automatically, "
                    "fix or remove this one"
                ) from None
            if record.target is None:
                raise UserError(f"{path}:{number}: record {record.id!r} has no target (not a traces output?)")
            if record.id in seen:
                raise UserError(f"{path}:{number}: record id {record.id!r} appears twice")
            seen.add(record.id)
            records.append(record)
        kept += len(raw) + 1
    if kept == len(data) - len(tail) and tail.strip():
        try:
            record = _read_line(tail)
        except ValueError:
            record = None
        if record is not None and record.target is not None and record.id not in seen:
            records.append(record)  # whole but for its newline: keep it, end the line
            with path.open("ab") as out:
                out.write(b"\n")
            return RecoveredOutput(records, 0)
    dropped = len(data) - kept
    if dropped:
        os.truncate(path, kept)
    return RecoveredOutput(records, dropped)


def _read_line(raw: bytes) -> ManifestRecord:
    try:
        return ManifestRecord.model_validate(json.loads(raw))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"not valid JSON ({error})") from None
    except ValidationError as error:
        raise ValueError(describe_validation_error(error)) from None


def relocate_image(record: ManifestRecord, from_dir: Path, to_dir: Path) -> ManifestRecord:
    """The record with a relative image path rewritten to hold from the output's folder."""
    if Path(record.image).is_absolute():
        return record
    moved = os.path.relpath(os.path.abspath(from_dir / record.image), os.path.abspath(to_dir))
    return record.model_copy(update={"image": moved})


class JsonlAppender:
    """Appends one JSON line at a time, flushed to disk before `append` returns. The file is
    created on the first line, so a run with nothing to report leaves no empty file behind."""

    def __init__(self, path: Path):
        self.path = path
        self._file: IO[str] | None = None

    def append(self, line: BaseModel | dict[str, Any]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        text = line.model_dump_json() if isinstance(line, BaseModel) else json.dumps(line)
        self._file.write(text + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def write_rejections(rejections: Iterable[TraceRejection], path: Path) -> Path:
    return write_atomically(path, "".join(rejection.model_dump_json() + "\n" for rejection in rejections))
