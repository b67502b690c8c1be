"""Text the tiny models' tokenizers are trained on: our prompts, the label names and the kind of
reasoning an SFT target holds, so that the words training sees most are few tokens each."""

from shared.labels import CHEXPERT_LABELS, NIH_LABELS
from shared.prompts import BUILTIN_FORMATS

_FINDING_PHRASES = (
    "The heart is enlarged.",
    "The cardiac silhouette is normal in size.",
    "The mediastinum is widened.",
    "There is a focal opacity in the right lower zone.",
    "There is a rounded nodule in the left upper zone.",
    "Perihilar haze and septal lines suggest edema.",
    "Dense consolidation fills the lower lobe.",
    "Patchy airspace disease is consistent with pneumonia.",
    "A plate-like band of atelectasis is seen.",
    "The lung edge is visible with no markings beyond it: pneumothorax.",
    "The costophrenic angle is blunted by a fluid level: pleural effusion.",
    "Pleural thickening is present along the lateral wall.",
    "A rib shows a step and a break: fracture.",
    "A line and a tube are in place: support devices.",
    "The lungs are clear. No acute findings.",
    "No pneumothorax. No effusion.",
)


def tokenizer_corpus() -> list[str]:
    lines = [fmt.user_text() for fmt in BUILTIN_FORMATS.values()]
    labels = list(CHEXPERT_LABELS) + list(NIH_LABELS)
    lines += [", ".join(labels)] * 20
    for label in CHEXPERT_LABELS:
        lines += [f"<think>{' '.join(_FINDING_PHRASES)}</think>\n<solution>{label}</solution>"] * 4
    lines += list(_FINDING_PHRASES) * 10
    checklist = ", ".join(f"{label} {answer}" for label in CHEXPERT_LABELS for answer in ("yes", "no"))
    lines += [f"<think>{checklist}</think>"] * 10  # the tiny model's label_checklist answers
    return lines
