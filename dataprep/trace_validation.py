"""Whether a teacher's trace may become an SFT target: it must follow the strict `<think>` /
`<solution>` contract our rewards read, reason in a non-empty think block, and its solution must
name exactly the ground-truth labels, each once, with nothing else in the list."""

from collections.abc import Sequence
from dataclasses import dataclass

from rewards.parsing import ParserConfig, parse_completion

STRICT_PARSER = ParserConfig(mode="strict")


@dataclass(frozen=True, slots=True)
class TraceVerdict:
    accepted: bool
    reason: str = ""  # a short category, counted in the summary ("wrong labels", ...)
    detail: str = ""  # what exactly was wrong with this trace


def check_trace(text: str, labels: Sequence[str], parser: ParserConfig = STRICT_PARSER) -> TraceVerdict:
    """`labels` are the ground truth in CheXpert order (as manifests hold them)."""
    result = parse_completion(text, parser)
    if not result.valid:
        return TraceVerdict(False, "invalid format", "; ".join(result.problems))
    if not result.think:
        return TraceVerdict(False, "empty reasoning", f"empty <{parser.think_tag}> block")
    unclean = [
        *(f"not a label: {entry!r}" for entry in result.invalid),
        *(f"repeated: {label}" for label in result.duplicates),
        *(f"negated: {label}" for label in result.negated),
    ]
    if unclean:
        return TraceVerdict(False, "unclean solution", "; ".join(unclean))
    if result.labels != list(labels):
        return TraceVerdict(
            False, "wrong labels", f"solution names {result.labels}, ground truth is {list(labels)}"
        )
    return TraceVerdict(True)
