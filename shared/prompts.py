"""Prompt formats, selectable by name in the server, the trainer and the evaluator.

Nine reasoning instructions follow the design cues of the paper's prompt ablation (written in our
own words), and four SFT output formats say what a fine-tuned model is taught to write; the paper
names them "Reasoning Narrative (free-form radiologic narrative), Reasoning A (structured 12-step
reasoning), Free Reasoning (concise analysis followed by labels), and Only Label (direct label
output with no rationale)". Every format lists the 14 valid labels and ends in the `<think>` /
`<solution>` contract the parser reads.

Only Label carries no rationale, yet its answers keep the contract's shape with an empty think
block: `<think></think>` then `<solution>labels</solution>`. One parser, one trace check and one
format rule ("valid outputs must contain exactly one <think>...</think> reasoning block followed by
a <solution>...</solution> block", the paper's hard reward) then serve every format; a format with
`rationale = False` asks for that empty block, and its traces must leave it empty.

One format is for the tiny demo model only: `label_checklist`, after the three words "Check each
label:", answers every label with yes or no in the think block (a two-level form of the
label-confidence matrix `reasoning_c` asks for), then the labels. The full instructions are ~270
tokens of text that is the same for every image: a 2-layer random model then gives the 16 image
tokens 6% of the prompt and learns the labels' rates instead of the film. A real model reads the
paper's prompts; this one is never a default for it.

Users add their own formats from a YAML or JSON file: `name: instruction text`, or
`name: {instruction: ..., rationale: false}` for a format whose answers carry no rationale.
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
LABELS_ONLY_CONTRACT = (
    "Valid labels (use these names exactly): " + LABEL_LIST + ".\n"
    "Answer in exactly this form and nothing else, the think block left empty:\n"
    "<think></think>\n"
    "<solution>comma-separated labels</solution>\n"
    'Use "No Finding" only when no other label applies.'
)

_INTRO = "You are an expert radiologist reading a chest X-ray. Identify every finding the image shows."


@dataclass(frozen=True)
class PromptFormat:
    name: str
    kind: str  # "reasoning" (prompt ablation), "sft" (SFT output format), "tiny" (demo model) or "user"
    instruction: str
    rationale: bool = True  # False: the answer's think block stays empty (Only Label)

    def contract(self) -> str:
        return CONTRACT if self.rationale else LABELS_ONLY_CONTRACT

    def user_text(self) -> str:
        if self.kind == "tiny":  # the instruction alone: no introduction, no contract
            return self.instruction
        return f"{_INTRO}\n{self.instruction}\n{self.contract()}"


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
    "only_label": "Give the labels directly, with no rationale.",
    "free_reasoning": "Write a concise analysis of the image in your own words, then give the labels.",
    "reasoning_narrative": _REASONING["narrative"],
    "reasoning_a_sft": _REASONING["reasoning_a"],
}
_NO_RATIONALE = frozenset({"only_label"})
_TINY = {"label_checklist": PromptFormat("label_checklist", "tiny", "Check each label:")}

BUILTIN_FORMATS: dict[str, PromptFormat] = {
    **{name: PromptFormat(name, "reasoning", text) for name, text in _REASONING.items()},
    **{name: PromptFormat(name, "sft", text, name not in _NO_RATIONALE) for name, text in _SFT.items()},
    **_TINY,
}
SFT_OUTPUT_FORMATS = tuple(_SFT)
REASONING_FORMATS = tuple(_REASONING)
TINY_MODEL_FORMATS = tuple(_TINY)  # for the embedded demo's tiny model, never a real one


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
        loaded = [_user_format(path, str(name), entry) for name, entry in data.items()]
        for prompt in loaded:
            self._formats[prompt.name] = prompt
        return sorted(prompt.name for prompt in loaded)


def _user_format(path: Path, name: str, entry: object) -> PromptFormat:
    """`name: text`, or `name: {instruction: text, rationale: bool}`."""
    rationale = True
    if isinstance(entry, dict) and "instruction" in entry:
        unknown = sorted(set(entry) - {"instruction", "rationale"})
        if unknown:
            raise UserError(f"{path}: format {name!r}: unknown key(s) {unknown}; use instruction, rationale")
        rationale = entry.get("rationale", True)
        if not isinstance(rationale, bool):
            raise UserError(f"{path}: format {name!r}: rationale must be true or false, not {rationale!r}")
        entry = entry["instruction"]
    if not isinstance(entry, str) or not entry.strip():
        raise UserError(f"{path}: format {name!r}: the instruction must be non-empty text")
    if name in BUILTIN_FORMATS:
        raise UserError(f"{path}: format {name!r} would replace a built-in format; choose another name")
    return PromptFormat(name, "user", entry.strip(), rationale)


def registry_with(formats_file: str | Path | None) -> PromptRegistry:
    """The built-in formats plus a user's file, if given: what every command reads formats from."""
    prompts = PromptRegistry()
    if formats_file is not None:
        prompts.add_from_file(formats_file)
    return prompts


def user_messages(prompt: PromptFormat) -> list[dict]:
    """Chat messages for one X-ray and a prompt format: the image first, then the instruction."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt.user_text()}]}]
