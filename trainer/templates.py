"""Synthetic SFT targets for the demo and the tests, where no teacher model writes reasoning traces.

Templated but varied: each label has several phrasings of its radiographic finding, sides and
zones are drawn at random, and each of the four SFT output formats arranges them its own way
before the `<solution>` block with the labels (CheXpert order, "No Finding" when none).
"""

import os
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from shared.errors import UserError
from shared.labels import CHEXPERT_LABELS, NO_FINDING, check_chexpert_labels
from shared.manifest import ManifestRecord, read_manifest, write_manifest

SIDES = ("right", "left")
ZONES = ("upper", "middle", "lower")

# label -> (checklist step it belongs to, phrasings of its finding); {side} and {zone} are drawn.
FINDINGS: dict[str, tuple[int, tuple[str, ...]]] = {
    "Enlarged Cardiomediastinum": (5, (
        "the cardiomediastinal silhouette is widened",
        "the superior mediastinum appears enlarged",
        "the mediastinal contour is broader than expected",
    )),
    "Cardiomegaly": (6, (
        "the cardiac silhouette is enlarged, with a cardiothoracic ratio above one half",
        "the heart is enlarged",
        "the transverse cardiac diameter is increased",
    )),
    "Lung Opacity": (8, (
        "there is an area of increased opacity in the {side} {zone} zone",
        "a hazy opacity projects over the {side} {zone} zone",
        "the {side} {zone} zone is less lucent than the other side",
    )),
    "Lung Lesion": (8, (
        "a rounded nodular opacity sits in the {side} {zone} zone",
        "a well-defined mass-like density is seen in the {side} {zone} zone",
    )),
    "Edema": (7, (
        "there is bilateral perihilar haziness with vascular congestion",
        "the interstitial markings are increased on both sides, with indistinct hilar vessels",
        "upper lobe vessels are diverted and there is perihilar haze",
    )),
    "Consolidation": (8, (
        "dense airspace consolidation with air bronchograms fills the {side} {zone} zone",
        "there is a confluent airspace opacity in the {side} {zone} zone",
    )),
    "Pneumonia": (8, (
        "patchy airspace opacity in the {side} {zone} zone is in keeping with infection",
        "the {side} {zone} zone shows an infective-looking airspace opacity",
    )),
    "Atelectasis": (8, (
        "a linear band-like opacity at the {side} base suggests volume loss",
        "there is plate-like opacity at the {side} lung base",
        "the {side} hemidiaphragm is raised with adjacent linear opacity",
    )),
    "Pneumothorax": (10, (
        "a visceral pleural line with no lung markings beyond it is seen at the {side} apex",
        "there is a rim of absent lung markings along the {side} apex",
    )),
    "Pleural Effusion": (10, (
        "the {side} costophrenic angle is blunted with a meniscus",
        "there is a layering fluid density at the {side} base",
        "a {side} pleural effusion obscures the hemidiaphragm",
    )),
    "Pleural Other": (10, (
        "there is pleural thickening along the {side} lateral chest wall",
        "an irregular pleural density is seen along the {side} side",
    )),
    "Fracture": (11, (
        "there is a cortical break in a {side} rib",
        "a {side} rib shows a displaced fracture line",
    )),
    "Support Devices": (3, (
        "a central venous catheter projects with its tip over the superior vena cava",
        "an endotracheal tube is in place above the carina",
        "monitoring leads and a cardiac device are seen",
        "a nasogastric tube courses below the diaphragm",
    )),
}  # fmt: skip

CHECKLIST_STEPS = (
    "Image quality", "Patient position", "Devices and lines", "Trachea", "Mediastinum", "Heart size",
    "Hila", "Right lung", "Left lung", "Pleural spaces and costophrenic angles", "Bones and soft tissues",
    "Summary",
)  # fmt: skip
CHECKLIST_NORMAL = {
    1: ("adequate inspiration and penetration", "diagnostic quality, no rotation"),
    2: ("erect frontal projection", "frontal view, patient upright"),
    3: ("no tubes, lines or devices", "no support devices are seen"),
    4: ("midline", "central and of normal calibre"),
    5: ("normal mediastinal contour", "mediastinum not widened"),
    6: ("normal heart size", "cardiothoracic ratio within normal limits"),
    7: ("normal hila", "hilar vessels of normal size"),
    8: ("clear", "no focal opacity"),
    9: ("clear", "no focal opacity"),
    10: ("costophrenic angles sharp, no pleural fluid or air", "no effusion or pneumothorax"),
    11: ("no acute bony abnormality", "bones and soft tissues unremarkable"),
}
OPENINGS = (
    "This is a frontal chest radiograph.",
    "I am reading a frontal chest film.",
    "The image is a chest X-ray in frontal projection.",
)
NORMAL_REMARKS = (
    "The trachea is midline.",
    "The bones are intact.",
    "The hila are not enlarged.",
    "The remaining lung fields are clear.",
)


def solution_labels(labels: Sequence[str]) -> list[str]:
    found = set(check_chexpert_labels(list(labels))) - {NO_FINDING}
    return [label for label in CHEXPERT_LABELS if label in found] or [NO_FINDING]


def describe(label: str, rng: random.Random) -> tuple[int, str]:
    """(checklist step, one phrasing of the finding) with side and zone drawn; the left lung is step 9."""
    step, phrasings = FINDINGS[label]
    side = rng.choice(SIDES)
    text = rng.choice(phrasings).format(side=side, zone=rng.choice(ZONES))
    if step == 8 and side == "left":
        step = 9
    return step, text


def synthetic_target(labels: Sequence[str], sft_format: str, rng: random.Random) -> str:
    """A target in `sft_format` for an X-ray with these CheXpert labels: `<think>` then `<solution>`."""
    if sft_format not in WRITERS:
        raise UserError(
            f"no synthetic targets for format {sft_format!r}; choose one of {', '.join(SYNTHETIC_FORMATS)}"
        )
    answer = solution_labels(labels)
    findings = [(label, *describe(label, rng)) for label in answer if label != NO_FINDING]
    rng.shuffle(findings)
    think = WRITERS[sft_format](findings, rng)
    return f"<think>{think}</think>\n<solution>{', '.join(answer)}</solution>"


def _only_label(findings: list[tuple[str, int, str]], rng: random.Random) -> str:
    del findings, rng
    return ""  # "direct label output with no rationale" (the paper): an empty think block


def _free_reasoning(findings: list[tuple[str, int, str]], rng: random.Random) -> str:
    sentences = [rng.choice(OPENINGS)]
    for _, _, text in findings:
        sentences.append(sentence(text))
    sentences.append(rng.choice(NORMAL_REMARKS))
    if findings:
        sentences.append(f"Together these fit {join_names([label for label, _, _ in findings])}.")
    else:
        sentences.append("There is no acute cardiopulmonary abnormality.")
    return " ".join(sentences)


def _narrative(findings: list[tuple[str, int, str]], rng: random.Random) -> str:
    if not findings:
        return (
            f"{rng.choice(OPENINGS)} I look for opacities, fluid, air and devices and find none. "
            "The heart and mediastinum are of normal size. Weighing this, the study is normal."
        )
    first, *rest = findings
    parts = [f"{rng.choice(OPENINGS)} The first thing I notice is that {first[2]}."]
    for _, _, text in rest:
        parts.append(
            rng.choice(("In addition, {}.", "I also see that {}.", "Looking further, {}.")).format(text)
        )
    parts.append(
        rng.choice(("Weighing the evidence together,", "Taking these observations together,"))
        + f" the picture is most consistent with {join_names([label for label, _, _ in findings])}."
    )
    return " ".join(parts)


def _checklist(findings: list[tuple[str, int, str]], rng: random.Random) -> str:
    by_step: dict[int, list[str]] = {}
    for _, step, text in findings:
        by_step.setdefault(step, []).append(text)
    lines = []
    for number, title in enumerate(CHECKLIST_STEPS, start=1):
        if number == 12:
            summary = join_names([label for label, _, _ in findings]) if findings else "no abnormal findings"
            lines.append(f"{number}. {title}: {summary}.")
        elif number in by_step:
            lines.append(f"{number}. {title}: {'; '.join(by_step[number])}.")
        else:
            lines.append(f"{number}. {title}: {rng.choice(CHECKLIST_NORMAL[number])}.")
    return "\n".join(lines)


def _label_checklist(findings: list[tuple[str, int, str]], rng: random.Random) -> str:
    """Every label in CheXpert order with "yes" or "no": a two-level form of the label-confidence
    matrix our Reasoning C prompt asks for, one decision per label at a fixed place, which a 2-layer
    model learns where a list of the present labels is one choice among fourteen at every step."""
    del rng
    present = {label for label, _, _ in findings}
    decisions = [
        f"{label} {'yes' if label in present else 'no'}" for label in CHEXPERT_LABELS if label != NO_FINDING
    ]
    summing_up = f"{NO_FINDING} {'no' if present else 'yes'}"  # last: it follows from the others
    return ", ".join([*decisions, summing_up])


# SFT output format -> the writer of its think block: the four of the paper, and the tiny model's
WRITERS = {
    "only_label": _only_label,
    "free_reasoning": _free_reasoning,
    "reasoning_narrative": _narrative,
    "reasoning_a_sft": _checklist,
    "label_checklist": _label_checklist,
}
SYNTHETIC_FORMATS = tuple(WRITERS)  # the formats synthetic targets are written in


def sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def join_names(labels: list[str]) -> str:
    names = [label.lower() for label in labels]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def with_synthetic_targets(
    records: Iterable[ManifestRecord], sft_format: str, seed: int = 0
) -> list[ManifestRecord]:
    """Copies of the records with `target` filled; each record's text depends only on the seed and its id."""
    return [
        record.model_copy(
            update={
                "target": synthetic_target(record.labels, sft_format, random.Random(f"{seed}:{record.id}"))
            }
        )
        for record in records
    ]


def write_synthetic_sft_manifest(source: str | Path, out: str | Path, sft_format: str, seed: int = 0) -> Path:
    """Read a manifest, fill in synthetic targets and write it to `out` (atomically). Image paths are
    rewritten relative to the new manifest's folder, so `out` may live anywhere."""
    source, out = Path(source), Path(out)
    records = with_synthetic_targets(read_manifest(source), sft_format, seed)
    out_dir = out.parent.resolve()
    moved = [
        record.model_copy(
            update={"image": os.path.relpath(record.image_path(source.parent).resolve(), out_dir)}
        )
        for record in records
    ]
    return write_manifest(moved, out)
