"""Prompt formats, selectable by name in the server, the trainer and the evaluator.

Nine reasoning instructions follow the design cues of the paper's prompt ablation (written in our
own words), and four SFT output formats say what a fine-tuned model is taught to write. Every
format lists the 14 valid labels and ends in the `<think>` / `<solution>` contract the parser reads.
Users add their own formats from a YAML or JSON file (`name: instruction text`).
"""

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from shared.errors import UserError
from shared.labels import CHEXPERT_LABELS

LABEL_LIST = ", ".join(CHEXPERT_LABELS)

CONTRACT = (
    "Valid labels (use these names exactly): " + LABEL_LIST + ".\n"
    "Answer in exactly this form and nothing else:\n"
    "<think>your reasoning</think>\n"
    "<solution>comma-separated labels</solution>\n"
    'Use "No Finding" only when no other label applies.'
)

_INTRO = "You are an expert radiologist reading a chest X-ray. Identify every finding the image shows."


@dataclass(frozen=True)
class PromptFormat:
    name: str
    kind: str  # "reasoning" (prompt ablation) or "sft" (SFT output format)
    instruction: str

    def user_text(self) -> str:
        return f"{_INTRO}\n{self.instruction}\n{CONTRACT}"


_REASONING = {
    "narrative": (
        "Write a free-form expert narrative: describe what you see, weigh the pieces of evidence "
        "together, and only then decide on the labels."
    ),
    "self_check": (
        "Scan region by region (airways, lungs, pleura, heart and mediastinum, bones, devices), note "
        "each observation, then run an explicit verification pass that re-checks every label before "
        "you commit to it."
    ),
    "hypothesis": (
        "Form hypotheses about the candidate findings, compare each against the image evidence for "
        "and against it, and keep only those the evidence supports."
    ),
    "reasoning_a": (
        "Follow this 12-step checklist in order and keep the format strict: 1 image quality, 2 "
        "patient position, 3 devices and lines, 4 trachea, 5 mediastinum, 6 heart size, 7 hila, "
        "8 right lung, 9 left lung, 10 pleural spaces and costophrenic angles, 11 bones and soft "
        "tissues, 12 summary of abnormal findings mapped to labels."
    ),
    "reasoning_b": (
        "Review the lungs zone by zone (upper, middle and lower zones on each side), then "
        "differentiate the pathologies you found: opacity versus consolidation versus atelectasis "
        "versus edema."
    ),
    "reasoning_c": (
        "Write an evidence-heavy report, then a label-confidence matrix giving each of the 14 "
        "labels a confidence with its supporting evidence; output the labels you are confident in."
    ),
    "reasoning_d": (
        "Label by definition: for each candidate label recall its strict radiological criteria and "
        "assign it only if the image meets them."
    ),
    "reasoning_e": (
        "After a first read, take a second look at the anatomic blind spots (apices, behind the "
        "heart, below the diaphragm, the hila, the bones) before you finalise the labels."
    ),
    "reasoning_f": (
        "For each abnormality you find, give a short differential diagnosis and say which label "
        "the evidence favours."
    ),
}

_SFT = {
    "only_label": "Keep the reasoning to one short sentence and focus on the labels.",
    "free_reasoning": "Reason freely about the image before giving the labels.",
    "reasoning_narrative": _REASONING["narrative"],
    "reasoning_a_sft": _REASONING["reasoning_a"],
}

BUILTIN_FORMATS: dict[str, PromptFormat] = {
    **{name: PromptFormat(name, "reasoning", text) for name, text in _REASONING.items()},
    **{name: PromptFormat(name, "sft", text) for name, text in _SFT.items()},
}
SFT_OUTPUT_FORMATS = tuple(_SFT)
REASONING_FORMATS = tuple(_REASONING)


class PromptRegistry:
    """Built-in formats plus any a user loads from a file; lookup errors list what exists."""

    def __init__(self, formats: dict[str, PromptFormat] | None = None):
        self._formats = dict(BUILTIN_FORMATS if formats is None else formats)

    def names(self) -> list[str]:
        return sorted(self._formats)

    def get(self, name: str) -> PromptFormat:
        try:
            return self._formats[name]
        except KeyError:
            raise UserError(
                f"unknown prompt format {name!r}; known formats: {', '.join(self.names())}"
            ) from None

    def add_from_file(self, path: str | Path) -> list[str]:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"prompt format file not found: {path}")
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise UserError(f"{path}: not a UTF-8 text file") from None
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as error:
            raise UserError(f"{path}: cannot parse prompt formats ({error})") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a mapping of format name to instruction text")
        for name, instruction in data.items():
            if not isinstance(instruction, str) or not instruction.strip():
                raise UserError(f"{path}: format {name!r}: the instruction must be non-empty text")
            if str(name) in BUILTIN_FORMATS:
                raise UserError(
                    f"{path}: format {name!r} would replace a built-in format; choose another name"
                )
        for name, instruction in data.items():
            self._formats[str(name)] = PromptFormat(str(name), "user", instruction.strip())
        return sorted(str(name) for name in data)


def user_messages(prompt: PromptFormat) -> list[dict]:
    """Chat messages for one X-ray and a prompt format: the image first, then the instruction."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt.user_text()}]}]
