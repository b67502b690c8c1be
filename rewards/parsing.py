"""Read a completion's `<think>` / `<solution>` blocks and its CheXpert labels.

Strict mode is the paper's contract, used for the rewards and the paper's metrics: tags exactly as
configured, labels read only from the one solution block, hedged entries ("possible pneumonia")
are invalid. Lenient mode forgives what a human reader would: tags in any case, an unclosed or
repeated solution block (the last one counts), a label list outside the tags ("Final answer:
Edema"), hedged entries, free-text entries.

One field, `valid`, says whether the answer parsed: in both modes it did only when the completion
is exactly one think block followed by exactly one solution block, with nothing but whitespace
around them, and the solution block names at least one label (the prompt asks for labels, with
"No Finding" for a normal study, so a block naming none is no answer). `problems` says, in
words, why an answer did not parse; it is empty exactly when `valid` is true. The labels found are
reported either way (the nuanced reward scores what it can of a malformed answer).
"""

import re
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, model_validator

from rewards.label_normaliser import ItemReading, clean_item, read_item
from shared.config import StrictModel
from shared.labels import CHEXPERT_LABELS, NO_FINDING

TAG_PRESETS: dict[str, tuple[str, str]] = {
    "chexreason": ("think", "solution"),
    "nv-reason": ("think", "answer"),
}
# Labels that may stand beside No Finding: CheXpert's No Finding allows support devices.
_COMPATIBLE_WITH_NO_FINDING = frozenset({NO_FINDING, "Support Devices"})
# Sentences end at a line break, ';', '|' or a period after a word ("1. Edema" keeps its number),
# and before the number of an inline numbered list ("1. Lung Opacity 2. Atelectasis").
_SENTENCE_SPLIT = re.compile(r"[;\n|]+|(?<=[A-Za-z)\]])\.\s+|\s+(?=\(?\d{1,2}[.)]\s)")
_ITEM_SPLIT = re.compile(r",")
_ALTERNATIVE = re.compile(r"\b(?:or|nor)\b", re.IGNORECASE)
_TAG = re.compile(r"<[^<>]*>")
_LABELLED_LINE = re.compile(
    r"^[ \t*#>-]*(?:final answer|final labels?|answer|labels?|final diagnos[ie]s|diagnos[ie]s|"
    r"impression|conclusion|solution|findings)[ \t*]*[:\-][ \t*]*(?P<list>.+)$",
    re.IGNORECASE | re.MULTILINE,
)


class ParserConfig(StrictModel, frozen=True):
    """How completions are read. `tags` picks a preset of tag names; `tags: null` uses
    `think_tag` / `solution_tag` as given."""

    mode: Literal["strict", "lenient"] = Field(
        "strict", description="strict: the paper's contract; lenient: forgives what a human reader would"
    )
    tags: Literal["chexreason", "nv-reason"] | None = Field(
        "chexreason",
        description="tag names preset: chexreason <think>/<solution>, nv-reason <think>/<answer>; "
        "null: think_tag and solution_tag as given",
    )
    think_tag: str = Field("think", description="the reasoning block's tag (with tags: null)")
    solution_tag: str = Field("solution", description="the answer block's tag (with tags: null)")

    @model_validator(mode="after")
    def _apply_preset(self) -> "ParserConfig":
        for tag in (self.think_tag, self.solution_tag):
            if not re.fullmatch(r"[A-Za-z][\w-]*", tag):
                raise ValueError(f"tag name {tag!r} must be a word (letters, digits, '_' or '-')")
        if self.tags is None:
            return self
        think, solution = TAG_PRESETS[self.tags]
        custom = {"think_tag", "solution_tag"} & self.model_fields_set
        if custom and (self.think_tag, self.solution_tag) != (think, solution):
            raise ValueError(
                f"custom tag names need tags: null (preset {self.tags!r} uses <{think}>/<{solution}>)"
            )
        object.__setattr__(self, "think_tag", think)
        object.__setattr__(self, "solution_tag", solution)
        return self


@dataclass(frozen=True, slots=True)
class ParseResult:
    valid: bool  # the answer parsed: contract kept and at least one label named (see the module doc)
    labels: list[str]  # in CheXpert order
    invalid: list[str] = field(default_factory=list)  # entries that name no label (as written)
    duplicates: list[str] = field(default_factory=list)  # one entry per repeated mention of a label
    negated: list[str] = field(default_factory=list)  # labels written as absent ("no pneumothorax")
    extraneous: str = ""  # text outside the think and solution blocks
    no_finding_conflict: bool = False  # No Finding beside a pathology
    think: str | None = None
    solution: str | None = None
    problems: list[str] = field(default_factory=list)  # why the answer did not parse, in words

    def to_dict(self) -> dict:
        return {
            "valid": self.valid,
            "labels": self.labels,
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "negated": self.negated,
            "extraneous": self.extraneous,
            "no_finding_conflict": self.no_finding_conflict,
            "problems": self.problems,
        }


@dataclass(frozen=True, slots=True)
class _Tag:
    start: int
    end: int
    name: str  # "think" or "solution" (the role, whatever the configured tag is called)
    closing: bool


def _find_tags(text: str, config: ParserConfig, lenient: bool) -> list[_Tag]:
    roles = {config.think_tag.lower(): "think", config.solution_tag.lower(): "solution"}
    names = "|".join(re.escape(name) for name in (config.think_tag, config.solution_tag))
    if lenient:
        pattern = re.compile(rf"<\s*(/?)\s*({names})\s*>", re.IGNORECASE)
    else:
        pattern = re.compile(rf"<(/?)({names})>")
    return [
        _Tag(match.start(), match.end(), roles[match.group(2).lower()], bool(match.group(1)))
        for match in pattern.finditer(text)
    ]


@dataclass(frozen=True, slots=True)
class _Structure:
    think: str | None
    solution: str | None
    extraneous: str
    problems: list[str]


def _read_structure(text: str, tags: list[_Tag], config: ParserConfig, lenient: bool) -> _Structure:
    names = {"think": config.think_tag, "solution": config.solution_tag}
    problems: list[str] = []
    spans: dict[str, tuple[int, int, int, int]] = {}  # role -> (open start, open end, close start, close end)
    for role in ("think", "solution"):
        opens = [tag for tag in tags if tag.name == role and not tag.closing]
        closes = [tag for tag in tags if tag.name == role and tag.closing]
        name = names[role]
        if not opens and not closes:
            problems.append(f"missing <{name}> block")
        elif len(opens) != 1 or len(closes) != 1:
            problems.append(f"{len(opens)} <{name}> and {len(closes)} </{name}> tags")
        elif closes[0].start < opens[0].start:
            problems.append(f"</{name}> before <{name}>")
        else:
            spans[role] = (opens[0].start, opens[0].end, closes[0].start, closes[0].end)
    if len(spans) == 2:
        think, solution = spans["think"], spans["solution"]
        if think[3] > solution[0]:
            problems.append(
                f"<{names['solution']}> not after the <{names['think']}> block (nested or out of order)"
            )
            if not lenient:
                spans.clear()
    outside = text
    for start, _, _, end in sorted(spans.values(), reverse=True):
        outside = outside[:start] + "\n" + outside[end:]
    extraneous = outside.strip() if spans else text.strip()
    if spans and extraneous:
        problems.append("text outside the blocks")
    return _Structure(
        think=text[spans["think"][1] : spans["think"][2]].strip() if "think" in spans else None,
        solution=text[spans["solution"][1] : spans["solution"][2]].strip() if "solution" in spans else None,
        extraneous=extraneous,
        problems=problems,
    )


def _lenient_label_source(text: str, tags: list[_Tag], structure: _Structure) -> str | None:
    """Where a lenient reader finds the labels when the strict solution block gives none: the
    last non-empty solution block (closed or not), a labelled line, or a last line of labels."""
    solution_opens = [tag for tag in tags if tag.name == "solution" and not tag.closing]
    for opening in reversed(solution_opens):
        closing = next(
            (t for t in tags if t.name == "solution" and t.closing and t.start >= opening.end), None
        )
        block = text[opening.end : closing.start if closing else len(text)].strip()
        if block:
            return block
    outside = _TAG.sub("\n", structure.extraneous if tags else text)
    labelled = list(_LABELLED_LINE.finditer(outside)) or list(_LABELLED_LINE.finditer(_TAG.sub("\n", text)))
    if labelled:
        return labelled[-1].group("list")
    lines = [line for line in outside.splitlines() if line.strip()]
    if lines and _all_entries_are_labels(lines[-1]):
        return lines[-1]
    return None


def _all_entries_are_labels(line: str) -> bool:
    readings = [reading for _, reading in _read_entries(line, lenient=False, allow_hedges=True)]
    readings = [reading for reading in readings if reading.kind != "empty"]
    return bool(readings) and all(reading.kind in ("label", "negated") for reading in readings)


def _read_entries(source: str, lenient: bool, allow_hedges: bool) -> list[tuple[str, ItemReading]]:
    """Each entry of a label list with its reading. A negation runs on through a written-out list
    ("No consolidation, effusion, or pneumothorax") as far as the entry holding "or"/"nor";
    without such an entry the list is one of labels ("Edema, no pneumothorax, Cardiomegaly")."""
    entries: list[tuple[str, ItemReading]] = []
    for sentence in _SENTENCE_SPLIT.split(source):
        parts = _ITEM_SPLIT.split(sentence)
        readings = [read_item(part, allow_hedges=allow_hedges, free_text_fallback=lenient) for part in parts]
        for index, reading in enumerate(readings):
            if reading.kind != "negated":
                continue
            last = next((j for j in range(index + 1, len(parts)) if _ALTERNATIVE.search(parts[j])), index)
            for j in range(index + 1, last + 1):
                carried = read_item("no " + clean_item(parts[j]))
                if carried.kind == "negated":
                    readings[j] = carried
        entries.extend(zip(parts, readings, strict=True))
    return entries


def _read_labels(source: str, lenient: bool) -> tuple[list[str], list[str], list[str], list[str]]:
    """(labels, invalid, duplicates, negated) of a label list."""
    seen: list[str] = []
    invalid: list[str] = []
    duplicates: list[str] = []
    negated: list[str] = []
    for entry, reading in _read_entries(source, lenient, allow_hedges=lenient):
        if reading.kind == "label":
            for label in reading.labels:
                (duplicates if label in seen else seen).append(label)
        elif reading.kind == "negated":
            negated.extend(reading.labels)
        elif reading.kind in ("invalid", "hedged"):
            invalid.append(entry.strip().removesuffix(".").strip())
    labels = [label for label in CHEXPERT_LABELS if label in seen]
    return labels, invalid, duplicates, [label for label in CHEXPERT_LABELS if label in negated]


def _why_no_label(solution: str) -> str:
    _, invalid, _, negated = _read_labels(solution, lenient=False)
    if invalid:
        return " (unrecognised: " + ", ".join(repr(entry) for entry in invalid[:3]) + ")"
    return " (only negated: " + ", ".join(negated) + ")" if negated else ""


def parse_completion(text: str, config: ParserConfig = ParserConfig()) -> ParseResult:  # noqa: B008 (frozen)
    lenient = config.mode == "lenient"
    tags = _find_tags(text, config, lenient)
    structure = _read_structure(text, tags, config, lenient)
    source = structure.solution
    if lenient and not (source and _read_labels(source, lenient)[0]):
        source = _lenient_label_source(text, tags, structure) or source
    labels, invalid, duplicates, negated = _read_labels(source, lenient) if source else ([], [], [], [])
    problems = list(structure.problems)
    if structure.solution is not None and not structure.solution:
        problems.append(f"empty <{config.solution_tag}> block")
    elif structure.solution is not None and not _read_labels(structure.solution, lenient)[0]:
        problems.append(f"no label in the <{config.solution_tag}> block" + _why_no_label(structure.solution))
    return ParseResult(
        valid=not problems,
        labels=labels,
        invalid=invalid,
        duplicates=duplicates,
        negated=negated,
        extraneous=structure.extraneous,
        no_finding_conflict=NO_FINDING in labels and bool(set(labels) - _COMPATIBLE_WITH_NO_FINDING),
        think=structure.think,
        solution=structure.solution,
        problems=problems,
    )
