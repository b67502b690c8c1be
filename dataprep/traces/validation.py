"""Whether a teacher's trace may become an SFT target: it must follow the strict `<think>` /
`<solution>` contract our rewards read, reason in a non-empty think block (or, for a format without
rationale such as Only Label, leave it empty), and its solution must name exactly the ground-truth
labels, each once, with nothing else in the list."""

from collections.abc import Sequence
from dataclasses import dataclass

from rewards.parsing import ParserConfig, parse_completion

STRICT_PARSER = ParserConfig(mode="strict")


@dataclass(frozen=True, slots=True)
class TraceVerdict:
    accepted: bool
    reason: str = ""  # a short category, counted in the summary ("wrong labels", ...)
    detail: str = ""  # what exactly was wrong with this trace


def check_trace(
    text: str, labels: Sequence[str], parser: ParserConfig = STRICT_PARSER, rationale: bool = True
) -> TraceVerdict:
    """`labels` are the ground truth in CheXpert order (as manifests hold them); `rationale` is the
    output format's (`PromptFormat.rationale`): False wants an empty think block."""
    result = parse_completion(text, parser)
    if not result.valid:
        return TraceVerdict(False, "invalid format", "; ".join(result.problems))
    if rationale and not result.think:
        return TraceVerdict(False, "empty reasoning", f"empty <{parser.think_tag}> block")
    if not rationale and result.think:
        return TraceVerdict(
            False, "unexpected reasoning", f"the format has no rationale: <{parser.think_tag}> must be empty"
        )
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
