"""Label vocabularies every process agrees on: CheXpert's 14, NIH ChestX-ray14's 14, and the mapping
between them used for the paper's out-of-distribution evaluation."""

from types import MappingProxyType

from shared.errors import UserError

# Exactly as CheXpert (and MIMIC-CXR-JPG's chexpert.csv) write them, in CheXpert's column order.
CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
NO_FINDING = "No Finding"
_CHEXPERT_SET = frozenset(CHEXPERT_LABELS)

# Exactly as NIH's Data_Entry_2017.csv writes them in `Finding Labels` (joined by "|").
NIH_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NIH_NO_FINDING = "No Finding"

# NIH label -> CheXpert label for the paper's 9-category NIH evaluation (Table 6). Choices:
# - Atelectasis, Cardiomegaly, Consolidation, Edema, Pneumonia, Pneumothorax: same finding, same name.
# - Mass and Nodule -> Lung Lesion: CheXpert's Lung Lesion is defined as a nodule or mass.
# - Pleural_Thickening -> Pleural Other: CheXpert files pleural thickening under Pleural Other.
# - No Finding -> No Finding.
# - Effusion is left out of the nine, as in the paper (its 10-category variant below adds it).
# - Infiltration, Emphysema, Fibrosis and Hernia have no CheXpert counterpart (Infiltration overlaps
#   Lung Opacity only loosely), so they are dropped; an image with only those findings has no label
#   among the nine.
NIH_TO_CHEXPERT_9 = MappingProxyType(
    {
        "Atelectasis": "Atelectasis",
        "Cardiomegaly": "Cardiomegaly",
        "Consolidation": "Consolidation",
        "Edema": "Edema",
        "Mass": "Lung Lesion",
        "Nodule": "Lung Lesion",
        "No Finding": "No Finding",
        "Pleural_Thickening": "Pleural Other",
        "Pneumonia": "Pneumonia",
        "Pneumothorax": "Pneumothorax",
    }
)
NIH_TO_CHEXPERT_10 = MappingProxyType({**NIH_TO_CHEXPERT_9, "Effusion": "Pleural Effusion"})

NIH9_LABELS: tuple[str, ...] = tuple(
    label for label in CHEXPERT_LABELS if label in set(NIH_TO_CHEXPERT_9.values())
)
NIH10_LABELS: tuple[str, ...] = tuple(
    label for label in CHEXPERT_LABELS if label in set(NIH_TO_CHEXPERT_10.values())
)

# Named label sets for scoring (`cxr-rl score --labels NAME`).
LABEL_SETS = MappingProxyType({"chexpert14": CHEXPERT_LABELS, "nih9": NIH9_LABELS, "nih10": NIH10_LABELS})


class UnknownLabelError(UserError):
    """A label string that is not in the vocabulary it was checked against."""


def label_set(name: str) -> tuple[str, ...]:
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise UserError(f"unknown label set {name!r}; choose one of {sorted(LABEL_SETS)}") from None


def check_chexpert_labels(labels: "list[str] | tuple[str, ...] | set[str]") -> list[str]:
    """Return the labels sorted in CheXpert order; raise naming any label CheXpert does not have."""
    given = set(labels)
    unknown = sorted(given - _CHEXPERT_SET)
    if unknown:
        raise UnknownLabelError(f"unknown CheXpert label(s) {unknown}; valid labels: {list(CHEXPERT_LABELS)}")
    return [label for label in CHEXPERT_LABELS if label in given]


def map_nih_labels(nih_labels: "list[str] | set[str]", categories: int = 9) -> list[str]:
    """Map NIH finding labels to CheXpert labels (9- or 10-category variant); unmapped ones drop out."""
    if categories not in (9, 10):
        raise UserError(f"NIH evaluation has 9 or 10 categories, not {categories}")
    known = set(NIH_LABELS) | {NIH_NO_FINDING}
    unknown = sorted(set(nih_labels) - known)
    if unknown:
        raise UnknownLabelError(f"unknown NIH label(s) {unknown}; valid labels: {sorted(known)}")
    mapping = NIH_TO_CHEXPERT_9 if categories == 9 else NIH_TO_CHEXPERT_10
    return check_chexpert_labels({mapping[label] for label in nih_labels if label in mapping})
