"""Table-driven parser checks: realistic completions in the four SFT output formats, read in both
modes and with both tag presets. Report phrasing marked "IU" is taken from the Indiana University
chest X-ray reports (torchxrayvision's NLMCXR_reports.tgz)."""

from dataclasses import dataclass

import pytest
from pydantic import ValidationError

from rewards.parsing import ParserConfig, parse_completion
from shared.labels import CHEXPERT_LABELS

AT, CM, CON, ECM, ED, FX = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Enlarged Cardiomediastinum",
    "Edema",
    "Fracture",
)
LL, LO, NF, PE, PN, PO = (
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pneumonia",
    "Pleural Other",
)
PTX, SD = "Pneumothorax", "Support Devices"

REASONING_A = (
    "<think>1. Image quality: adequate inspiration, no rotation. 2. Position: PA. 3. Devices: none. "
    "4. Trachea: midline. 5. Mediastinum: normal width. 6. Heart: the cardiac silhouette is enlarged. "
    "7. Hila: prominent vessels. 8. Right lung: interstitial markings increased. 9. Left lung: same. "
    "10. Pleura: blunted right costophrenic angle, no pneumothorax. 11. Bones: intact. "
    "12. Summary: cardiomegaly, edema, small right effusion.</think>\n"
)
FREE = "<think>The heart is enlarged and there is a small right pleural effusion; no pneumothorax.</think>\n"
NARRATIVE = (
    "<think>Looking at this frontal radiograph, the lungs are clear without focal consolidation. The "
    "cardiomediastinal silhouette is within normal limits. No pleural effusion or pneumothorax.</think>\n"
)
ONLY = "<think>Labels from the image.</think>\n"


@dataclass(frozen=True)
class Expected:
    valid: bool
    labels: tuple[str, ...]
    invalid: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    negated: tuple[str, ...] | None = None  # None: not checked


def sol(body: str) -> str:
    return f"<solution>{body}</solution>"


# (case id, completion, strict reading, lenient reading or None when the same as strict)
CASES: list[tuple[str, str, Expected, Expected | None]] = [
    # --- well-formed, each SFT output format
    ("only-label", ONLY + sol("Cardiomegaly"), Expected(True, (CM,)), None),
    (
        "reasoning-a",
        REASONING_A + sol("Cardiomegaly, Edema, Pleural Effusion"),
        Expected(True, (CM, ED, PE)),
        None,
    ),
    ("free-reasoning", FREE + sol("Pleural Effusion, Cardiomegaly"), Expected(True, (CM, PE)), None),
    ("narrative-normal", NARRATIVE + sol("No Finding"), Expected(True, (NF,)), None),
    (
        "case-and-order",
        ONLY + sol("pleural effusion, CARDIOMEGALY, edema"),
        Expected(True, (CM, ED, PE)),
        None,
    ),
    (
        "newlines-around",
        "<think>\n\n</think>\n\n<solution>\nEdema\n</solution>\n",
        Expected(True, (ED,)),
        None,
    ),
    (
        "all-names",
        ONLY + sol("Lung Opacity, Lung Lesion, Pleural Other, Enlarged Cardiomediastinum"),
        Expected(True, (ECM, LO, LL, PO)),
        None,
    ),
    ("trailing-period", ONLY + sol("No Finding."), Expected(True, (NF,)), None),
    ("bullets", ONLY + sol("\n- Edema\n- Atelectasis\n"), Expected(True, (ED, AT)), None),
    ("numbered", ONLY + sol("1. Edema\n2. Consolidation"), Expected(True, (ED, CON)), None),
    ("numbered-inline", ONLY + sol("1. Lung Opacity 2. Atelectasis"), Expected(True, (LO, AT)), None),
    ("numbered-inline-paren", ONLY + sol("1) Lung Opacity 2) Atelectasis"), Expected(True, (LO, AT)), None),
    (
        "numbered-inline-three",
        ONLY + sol("1. Support Devices 2. Pleural Effusion 3. Edema."),
        Expected(True, (ED, PE, SD)),
        None,
    ),
    ("json-list", ONLY + sol('["Edema", "Cardiomegaly"]'), Expected(True, (CM, ED)), None),
    ("pipe-separated", ONLY + sol("Edema | Pneumonia"), Expected(True, (ED, PN)), None),
    # --- synonyms, abbreviations, plurals
    ("normal", ONLY + sol("normal"), Expected(True, (NF,)), None),
    ("none", ONLY + sol("None"), Expected(True, (NF,)), None),
    ("IU-no-acute-process", ONLY + sol("No acute cardiopulmonary process."), Expected(True, (NF,)), None),
    ("no-acute-findings", ONLY + sol("no acute findings"), Expected(True, (NF,)), None),
    ("IU-normal-chest", ONLY + sol("Normal chest."), Expected(True, (NF,)), None),
    ("ptx", ONLY + sol("PTX"), Expected(True, (PTX,)), None),
    ("enlarged-heart", ONLY + sol("enlarged heart"), Expected(True, (CM,)), None),
    ("effusions-plural", ONLY + sol("effusions, fractures"), Expected(True, (PE, FX)), None),
    ("devices-one-entry", ONLY + sol("ETT / lines / pacemaker"), Expected(True, (SD,)), None),
    ("catheter", ONLY + sol("catheter"), Expected(True, (SD,)), None),
    ("tube", ONLY + sol("NG tube"), Expected(True, (SD,)), None),
    ("mass-nodule-one-entry", ONLY + sol("mass/nodule"), Expected(True, (LL,)), None),
    ("pleural-thickening", ONLY + sol("Pleural_Thickening"), Expected(True, (PO,)), None),
    ("congestion", ONLY + sol("pulmonary vascular congestion"), Expected(True, (ED,)), None),
    (
        "infiltrate",
        ONLY + sol("infiltrates, airspace disease"),
        Expected(True, (LO,), duplicates=(LO,)),
        None,
    ),
    ("widened-mediastinum", ONLY + sol("widened mediastinum"), Expected(True, (ECM,)), None),
    ("rib-fractures", ONLY + sol("left rib fractures"), Expected(True, (FX,)), None),
    (
        "modifiers",
        ONLY + sol("small left pleural effusion, left lower lobe pneumonia, bibasilar atelectasis"),
        Expected(True, (PN, AT, PE)),
        None,
    ),
    ("collapse", ONLY + sol("collapse"), Expected(True, (AT,)), None),
    ("infiltration-nih-name", ONLY + sol("Infiltration, Mass"), Expected(True, (LO, LL)), None),
    (
        "confidence-matrix",
        ONLY + sol("Edema: yes; Pneumonia: no; Cardiomegaly: yes"),
        Expected(True, (CM, ED), negated=(PN,)),
        None,
    ),
    # --- negations are not predictions
    ("no-ptx", ONLY + sol("Edema, no pneumothorax"), Expected(True, (ED,), negated=(PTX,)), None),
    (
        "without-effusion",
        ONLY + sol("Cardiomegaly, without effusion"),
        Expected(True, (CM,), negated=(PE,)),
        None,
    ),
    (
        "negative-for",
        ONLY + sol("negative for pneumonia, Atelectasis"),
        Expected(True, (AT,), negated=(PN,)),
        None,
    ),
    (
        "label-after-negation",
        ONLY + sol("Edema, no pneumothorax, Cardiomegaly"),
        Expected(True, (CM, ED), negated=(PTX,)),
        None,
    ),
    (
        "absent-present",
        ONLY + sol("Pneumothorax: absent, Edema: present"),
        Expected(True, (ED,), negated=(PTX,)),
        None,
    ),
    ("only-negation", ONLY + sol("No pneumothorax"), Expected(False, (), negated=(PTX,)), None),
    (
        "IU-negated-list",
        ONLY + sol("No focal consolidation, pleural effusion, or pneumothorax identified."),
        Expected(False, (), negated=(CON, PTX, PE)),
        None,
    ),
    (
        "IU-negated-list-then-finding",
        ONLY + sol("Cardiomegaly. No focal infiltrate, pneumothorax or pleural effusion"),
        Expected(True, (CM,), negated=(LO, PTX, PE)),
        None,
    ),
    (
        "IU-there-is-no",
        ONLY + sol("Edema. There is no pneumothorax."),
        Expected(True, (ED,), negated=(PTX,)),
        None,
    ),
    # --- invalid labels and duplicates
    ("invalid-label", ONLY + sol("Banana, Edema"), Expected(True, (ED,), invalid=("Banana",)), None),
    (
        "nih-only-label",
        ONLY + sol("Emphysema, Hernia"),
        Expected(False, (), invalid=("Emphysema", "Hernia")),
        None,
    ),
    ("duplicates", ONLY + sol("Edema, edema, Edema"), Expected(True, (ED,), duplicates=(ED, ED)), None),
    (
        "synonym-duplicate",
        ONLY + sol("Pleural Effusion, effusion"),
        Expected(True, (PE,), duplicates=(PE,)),
        None,
    ),
    ("device-duplicate", ONLY + sol("ETT, pacemaker"), Expected(True, (SD,), duplicates=(SD,)), None),
    # --- empty solutions
    ("empty-solution", ONLY + "<solution></solution>", Expected(False, ()), None),
    ("blank-solution", ONLY + "<solution>  \n </solution>", Expected(False, ()), None),
    # --- hedged entries: invalid in strict mode, labels in lenient mode
    (
        "possible",
        ONLY + sol("possible pneumonia"),
        Expected(False, (), invalid=("possible pneumonia",)),
        Expected(True, (PN,)),
    ),
    (
        "likely",
        ONLY + sol("likely atelectasis, Edema"),
        Expected(True, (ED,), invalid=("likely atelectasis",)),
        Expected(True, (ED, AT)),
    ),
    (
        "question-mark",
        ONLY + sol("Pneumonia?"),
        Expected(False, (), invalid=("Pneumonia?",)),
        Expected(True, (PN,)),
    ),
    (
        "cannot-exclude",
        ONLY + sol("cannot exclude pneumothorax"),
        Expected(False, (), invalid=("cannot exclude pneumothorax",)),
        Expected(True, (PTX,)),
    ),
    (
        "IU-question",
        ONLY + sol("Unchanged cardiomegaly. Question XXXX pleural effusions."),
        Expected(True, (CM,), invalid=("Question XXXX pleural effusions",)),
        Expected(True, (CM, PE)),
    ),
    # --- free text in the solution: strict keeps the contract, lenient reads it
    (
        "IU-free-text-solution",
        ONLY
        + sol(
            "Cardiomegaly with central pulmonary vascular congestion and no acute cardiopulmonary findings."
        ),
        Expected(
            False,
            (),
            invalid=(
                "Cardiomegaly with central pulmonary vascular congestion and no acute "
                "cardiopulmonary findings",
            ),
        ),
        Expected(True, (CM, ED)),
    ),
    (
        "IU-picc",
        ONLY + sol("Left PICC in the mid SVC. Negative for pneumothorax."),
        Expected(False, (), invalid=("Left PICC in the mid SVC",), negated=(PTX,)),
        Expected(True, (SD,), negated=(PTX,)),
    ),
    (
        "IU-effusions-sentence",
        ONLY
        + sol(
            "There are small to moderate sized bilateral pleural effusions, left greater "
            "than right. There is no pneumothorax."
        ),
        Expected(
            False,
            (),
            invalid=(
                "There are small to moderate sized bilateral pleural effusions",
                "left greater than right",
            ),
            negated=(PTX,),
        ),
        Expected(True, (PE,), invalid=("left greater than right",), negated=(PTX,)),
    ),
    # --- tags missing, repeated, nested, out of order
    ("missing-think", sol("Edema"), Expected(False, (ED,)), None),
    ("missing-both-last-line", "Edema", Expected(False, ()), Expected(False, (ED,))),
    (
        "missing-both-final-answer",
        "The cardiac silhouette is enlarged and the vessels are indistinct.\n"
        "Final answer: Cardiomegaly, Edema",
        Expected(False, ()),
        Expected(False, (CM, ED)),
    ),
    ("missing-solution-labels-line", FREE + "Labels: Pneumonia", Expected(False, ()), Expected(False, (PN,))),
    (
        "label-list-in-think-only",
        "<think>Impression: cardiomegaly.</think><solution></solution>",
        Expected(False, ()),
        Expected(False, (CM,)),  # lenient reads the think block, but the answer itself names nothing
    ),
    (
        "unclosed-solution",
        ONLY + "<solution>Edema, Cardiomegaly",
        Expected(False, ()),
        Expected(False, (CM, ED)),
    ),
    (
        "repeated-solution",
        ONLY + sol("Edema") + sol("Pneumonia"),
        Expected(False, ()),
        Expected(False, (PN,)),
    ),
    ("repeated-think", "<think>a</think><think>b</think>" + sol("Edema"), Expected(False, (ED,)), None),
    (
        "nested",
        "<think>reasoning <solution>Edema</solution></think>",
        Expected(False, ()),
        Expected(False, (ED,)),
    ),
    ("out-of-order", sol("Edema") + "<think>x</think>", Expected(False, ()), Expected(False, (ED,))),
    (
        "upper-case-tags",
        "<THINK>x</THINK><SOLUTION>Edema</SOLUTION>",
        Expected(False, ()),
        Expected(True, (ED,)),
    ),
    (
        "spaced-tags",
        "<think>x</think>< solution >Edema</ solution >",
        Expected(False, ()),
        Expected(True, (ED,)),
    ),
    # --- text outside the blocks
    ("extraneous-after", ONLY + sol("Edema") + "\nHope this helps!", Expected(False, (ED,)), None),
    ("extraneous-before", "Sure, here is my reading.\n" + ONLY + sol("Edema"), Expected(False, (ED,)), None),
]


def _check(result, expected: Expected, case_id: str) -> None:
    assert result.valid == expected.valid, (case_id, result)
    assert result.labels == [label for label in CHEXPERT_LABELS if label in expected.labels], (
        case_id,
        result,
    )
    assert result.invalid == list(expected.invalid), (case_id, result)
    assert result.duplicates == list(expected.duplicates), (case_id, result)
    if expected.negated is not None:
        assert sorted(result.negated) == sorted(expected.negated), (case_id, result)
    # One field says whether the answer parsed: it did exactly when nothing is wrong with it.
    assert result.valid == (not result.problems), (case_id, result)
    assert "failed" not in result.to_dict(), case_id


def _to_nv_reason(text: str) -> str:
    return (
        text.replace("<solution>", "<answer>")
        .replace("</solution>", "</answer>")
        .replace("SOLUTION>", "ANSWER>")
        .replace(" solution >", " answer >")
    )


@pytest.mark.parametrize(("case_id", "text", "strict", "lenient"), CASES, ids=[case[0] for case in CASES])
@pytest.mark.parametrize("tags", ["chexreason", "nv-reason"])
def test_parse_table(case_id: str, text: str, strict: Expected, lenient: Expected | None, tags: str) -> None:
    if tags == "nv-reason":
        text = _to_nv_reason(text)
    _check(parse_completion(text, ParserConfig(mode="strict", tags=tags)), strict, case_id)
    _check(parse_completion(text, ParserConfig(mode="lenient", tags=tags)), lenient or strict, case_id)


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 60


def test_labels_come_sorted_in_chexpert_order() -> None:
    result = parse_completion(ONLY + sol("Support Devices, Atelectasis, No Finding, Fracture"))
    assert result.labels == [NF, AT, FX, SD]


def test_wrong_preset_finds_no_solution() -> None:
    chexreason_text = ONLY + sol("Edema")
    strict = parse_completion(chexreason_text, ParserConfig(tags="nv-reason"))
    assert not strict.valid and strict.labels == [] and "missing <answer> block" in strict.problems
    # Lenient reading still finds the label list left outside the (unknown) tags.
    assert parse_completion(chexreason_text, ParserConfig(mode="lenient", tags="nv-reason")).labels == [ED]


def test_no_finding_conflict() -> None:
    assert parse_completion(ONLY + sol("No Finding, Cardiomegaly")).no_finding_conflict
    assert not parse_completion(ONLY + sol("No Finding, Support Devices")).no_finding_conflict
    assert not parse_completion(ONLY + sol("Cardiomegaly")).no_finding_conflict


def test_extraneous_and_blocks_are_reported() -> None:
    result = parse_completion("Sure.\n<think> I see edema </think>\n<solution> Edema </solution>\nDone")
    assert result.think == "I see edema" and result.solution == "Edema"
    assert "Sure." in result.extraneous and "Done" in result.extraneous
    assert result.problems == ["text outside the blocks"]


def test_an_answer_without_a_label_did_not_parse() -> None:
    """The prompt asks for labels ("No Finding" for a normal study): a block naming none is no answer,
    and the one field that says so never contradicts another."""
    for solution, problem in [
        ("", "empty <solution> block"),
        ("possible pneumonia", "no label in the <solution> block (unrecognised: 'possible pneumonia')"),
        ("No pneumothorax", "no label in the <solution> block (only negated: Pneumothorax)"),
    ]:
        result = parse_completion(ONLY + sol(solution))
        assert not result.valid and result.labels == [] and result.problems == [problem], result
        assert result.to_dict()["valid"] is False and "failed" not in result.to_dict()


def test_custom_tags() -> None:
    config = ParserConfig(tags=None, think_tag="reasoning", solution_tag="labels")
    assert parse_completion("<reasoning>x</reasoning><labels>Edema</labels>", config).labels == [ED]


def test_bad_parser_config_is_rejected() -> None:
    with pytest.raises(ValidationError, match="tags: null"):
        ParserConfig(tags="chexreason", solution_tag="labels")
    with pytest.raises(ValidationError, match="must be a word"):
        ParserConfig(tags=None, think_tag="<think>")
    with pytest.raises(ValidationError):
        ParserConfig(mode="loose")


def test_nv_reason_preset_uses_answer_tag() -> None:
    assert ParserConfig(tags="nv-reason").solution_tag == "answer"
    result = parse_completion("<think>x</think><answer>PTX</answer>", ParserConfig(tags="nv-reason"))
    assert result.valid and result.labels == [PTX]
