"""JSONL files every process reads or appends: typed records with errors that name file:line, and
append-only logs that a resumed run trims back to its last checkpoint."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from shared.config import describe_validation_error
from shared.errors import UserError

ModelT = TypeVar("ModelT", bound=BaseModel)


def read_jsonl_models(path: str | Path, model_class: type[ModelT], what: str = "file") -> list[ModelT]:
    """One `model_class` per non-blank line; a bad line is an error naming file:line and why."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    records = []
    with path.open() as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(model_class.model_validate(json.loads(line)))
            except json.JSONDecodeError as error:
                raise UserError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            except ValidationError as error:
                raise UserError(f"{path}:{number}: {describe_validation_error(error)}") from None
    return records


class JsonlLog:
    """An append-only JSONL log (metrics): each entry flushed as written, so a crash loses at most
    the line being written."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, entry: dict[str, Any]) -> None:
        with self.path.open("a") as out:
            out.write(json.dumps(entry, default=str) + "\n")

    def keep(self, wanted: Callable[[dict[str, Any]], bool]) -> None:
        """Drop the entries a crashed run wrote after its last checkpoint (they are about to be
        redone), and any line the crash cut short."""
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if wanted(entry):
                kept.append(line + "\n")
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text("".join(kept))
        temporary.replace(self.path)
