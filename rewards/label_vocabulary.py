"""The words the label normaliser knows: synonyms of the 14 CheXpert labels, the modifiers it
ignores, and the negation and hedge triggers (NegEx-style) it looks for.

Phrases are written naturally; `rewards.label_normaliser.words` normalises them exactly as it
normalises the text it reads, so plurals, case and modifiers need not be listed.
"""

from shared.labels import NO_FINDING


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that qualify a finding without changing which label it is.
MODIFIERS = _words(
    "a an the small large moderate mild mildly severe minimal minimally trace tiny slight slightly "
    "significant marked markedly moderately bilateral bilaterally left right bibasilar basilar bibasal "
    "basal upper lower middle mid lobe apical subsegmental segmental patchy focal diffuse multifocal "
    "new old chronic acute stable increased decreased persistent residual loculated layering tension "
    "healed healing rib worsening improving improved interval overall very unchanged definite definitive "
    "identified seen noted visualized demonstrated evident appreciated present visible"
)
UNCHANGED_WORDS = _words(
    "atelectasis pneumothorax process thorax mass abscess gas this is was has its us as status "
    "bronchiectasis stenosis sepsis diagnosis analysis basis less yes does"
)

# Phrases for each label, written naturally; they are normalised the same way as the text.
SYNONYMS: dict[str, tuple[str, ...]] = {
    NO_FINDING: (
        "no finding",
        "no acute finding",
        "no acute cardiopulmonary process",
        "no acute cardiopulmonary abnormality",
        "no acute cardiopulmonary disease",
        "no acute cardiopulmonary finding",
        "no acute intrathoracic process",
        "no acute intrathoracic abnormality",
        "no acute abnormality",
        "no acute disease",
        "no acute process",
        "no active disease",
        "no evidence of active disease",
        "no acute pulmonary disease",
        "no active cardiopulmonary disease",
        "no radiographic evidence of acute cardiopulmonary disease",
        "no evidence of acute cardiopulmonary disease",
        "no significant abnormality",
        "no abnormality",
        "no pathology",
        "normal chest",
        "normal chest x-ray",
        "normal chest radiograph",
        "normal radiograph",
        "normal study",
        "normal exam",
    ),
    "Enlarged Cardiomediastinum": (
        "enlarged cardiomediastinum",
        "cardiomediastinal enlargement",
        "enlarged cardiomediastinal silhouette",
        "widened cardiomediastinal silhouette",
        "cardiomediastinal silhouette is enlarged",
        "cardiomediastinal silhouette is widened",
        "widened mediastinum",
        "mediastinal widening",
        "enlarged mediastinum",
        "mediastinal enlargement",
        "mediastinum is widened",
    ),
    "Cardiomegaly": (
        "cardiomegaly",
        "enlarged heart",
        "heart enlargement",
        "cardiac enlargement",
        "enlarged cardiac silhouette",
        "enlarged heart size",
        "heart is enlarged",
        "heart size is enlarged",
        "cardiac silhouette is enlarged",
    ),
    "Lung Opacity": (
        "lung opacity",
        "opacity",
        "pulmonary opacity",
        "airspace opacity",
        "airspace disease",
        "infiltrate",
        "infiltration",
        "ground-glass opacity",
        "ground glass",
        "ggo",
        "opacification",
    ),
    "Lung Lesion": (
        "lung lesion",
        "lung mass",
        "lung nodule",
        "pulmonary nodule",
        "pulmonary mass",
        "mass",
        "nodule",
        "nodular opacity",
        "nodular density",
        "cavitary lesion",
        "neoplasm",
        "tumor",
        "carcinoma",
    ),
    "Edema": (
        "edema",
        "oedema",
        "pulmonary edema",
        "interstitial edema",
        "vascular congestion",
        "pulmonary vascular congestion",
        "pulmonary congestion",
        "congestive heart failure",
        "chf",
        "fluid overload",
    ),
    "Consolidation": ("consolidation", "airspace consolidation"),
    "Pneumonia": (
        "pneumonia",
        "pna",
        "bronchopneumonia",
        "infectious process",
        "aspiration pneumonia",
    ),
    "Atelectasis": (
        "atelectasis",
        "atelectatic change",
        "atx",
        "volume loss",
        "plate-like atelectasis",
        "lobar collapse",
    ),
    "Pneumothorax": ("pneumothorax", "ptx", "pneumothoraces"),
    "Pleural Effusion": (
        "pleural effusion",
        "effusion",
        "pleural fluid",
        "hydrothorax",
        "blunting of the costophrenic angle",
        "blunted costophrenic angle",
        "costophrenic angle blunting",
    ),
    "Pleural Other": (
        "pleural other",
        "pleural thickening",
        "pleural_thickening",
        "pleural plaque",
        "pleural scarring",
        "pleural calcification",
        "fibrothorax",
    ),
    "Fracture": ("fracture", "fx", "broken rib", "compression deformity"),
    "Support Devices": (
        "support devices",
        "endotracheal tube",
        "ett",
        "et tube",
        "nasogastric tube",
        "ng tube",
        "ngt",
        "orogastric tube",
        "og tube",
        "enteric tube",
        "feeding tube",
        "dobhoff tube",
        "chest tube",
        "tracheostomy tube",
        "tracheostomy",
        "pacemaker",
        "pacer",
        "pacemaker leads",
        "defibrillator",
        "aicd",
        "icd",
        "central venous catheter",
        "central line",
        "cvc",
        "picc",
        "picc line",
        "port-a-cath",
        "catheter",
        "swan-ganz catheter",
        "pulmonary artery catheter",
        "lvad",
        "lines and tubes",
        "tubes and lines",
        "monitoring leads",
    ),
}

# Phrases that hold a label's word but name something else; they are matched and dropped.
NOT_LABELS = ("pericardial effusion", "pericardial fluid", "joint effusion", "no change", "mass effect")

# Generic words that name a label only as a list entry: in free text "normal heart size" is not
# No Finding and "along the line of" is not a device.
ITEM_ONLY_SYNONYMS: dict[str, tuple[str, ...]] = {
    NO_FINDING: ("normal", "none", "nil", "unremarkable", "no abnormal finding", "clear"),
    "Lung Lesion": ("lesion",),
    "Atelectasis": ("collapse",),
    "Pneumonia": ("infection",),
    "Support Devices": ("device", "support device", "line", "tube", "lines/tubes", "port", "wire", "lead"),
}

NEGATION_TRIGGERS = (
    "no",
    "not",
    "without",
    "negative for",
    "no evidence of",
    "no sign of",
    "no signs of",
    "absence of",
    "absent",
    "free of",
    "resolution of",
    "resolved",
    "rule out",
    "ruled out",
    "nor",
    "neither",
    "no longer",
)
POST_NEGATION_TRIGGERS = (
    "not seen",
    "not identified",
    "not present",
    "not visualized",
    "not evident",
    "not appreciated",
    "absent",
    "has resolved",
    "have resolved",
    "resolved",
    "excluded",
    "ruled out",
)
# Look like negations but are not ("no change in cardiomegaly", "cannot exclude pneumonia").
PSEUDO_NEGATIONS = (
    "no change",
    "no significant change",
    "no interval change",
    "no increase",
    "no decrease",
    "not only",
    "not excluded",
    "can not exclude",
    "cannot exclude",
    "not be excluded",
    "cannot be excluded",
)
HEDGE_TRIGGERS = (
    "possible",
    "possibly",
    "probable",
    "probably",
    "likely",
    "suspected",
    "suspicious for",
    "suspicion of",
    "questionable",
    "question of",
    "may represent",
    "may be",
    "could represent",
    "could be",
    "cannot exclude",
    "can not exclude",
    "cannot be excluded",
    "not excluded",
    "concerning for",
    "worrisome for",
    "equivocal",
    "borderline",
    "versus",
    "vs",
    "differential includes",
    "presumed",
    "query",
    "question",
)
PRESENT_ANSWERS = frozenset({"yes", "present", "positive", "true", "1", "y"})
ABSENT_ANSWERS = frozenset({"no", "absent", "negative", "false", "0", "n", "none", "not present"})
