"""The normaliser's negation and synonym handling on real radiology phrasing: the Indiana University
chest X-ray reports that torchxrayvision ships (NLMCXR_reports.tgz, a dev extra)."""

import importlib.util
import re
import tarfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from rewards.label_normaliser import find_mentions
from rewards.parsing import ParserConfig, parse_completion

AT, CM, CON, ED, FX = "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Fracture"
LL, LO, NF, PE, PN, PTX, SD = (
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)


@pytest.fixture(scope="module")
def iu_reports() -> dict[str, dict[str, str]]:
    """Report id -> {"FINDINGS": ..., "IMPRESSION": ...}."""
    spec = importlib.util.find_spec("torchxrayvision")  # located, not imported (that would load torch)
    archive = Path(spec.origin).parent / "data" / "NLMCXR_reports.tgz" if spec and spec.origin else None
    if archive is None or not archive.is_file():
        pytest.skip("torchxrayvision ships no NLMCXR_reports.tgz")
    reports: dict[str, dict[str, str]] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".xml"):
                continue
            root = ElementTree.fromstring(tar.extractfile(member).read())
            sections = {node.get("Label"): (node.text or "") for node in root.iter("AbstractText")}
            reports[Path(member.name).stem] = sections
    return reports


# (report id, section, labels present, labels negated), read and checked by hand.
REPORT_CASES = [
    (
        "3319",
        "FINDINGS",
        [],
        [CON, PTX, PE],
    ),  # "No focal consolidation, pleural effusion, or pneumothorax identified."
    ("3319", "IMPRESSION", [NF], []),  # "No acute cardiopulmonary abnormality identified."
    (
        "3353",
        "IMPRESSION",
        [CM, ED],
        [],
    ),  # "Cardiomegaly with central pulmonary vascular congestion and no acute ..."
    (
        "3688",
        "IMPRESSION",
        [LO, ED, AT, PE, SD],
        [PTX],
    ),  # "Left PICC in the mid SVC. Negative for pneumothorax. ..."
    (
        "2485",
        "FINDINGS",
        [LO, PE],
        [PTX],
    ),  # "... small to moderate sized bilateral pleural effusions ... no pneumothorax."
    (
        "2887",
        "IMPRESSION",
        [LO, AT],
        [PTX],
    ),  # "... pneumothorax is not visualized ... bibasilar atelectasis/airspace disease."
    (
        "497",
        "FINDINGS",
        [],
        [LL, ED, PN, PTX, PE],
    ),  # "No pneumonia, effusions, edema, pneumothorax, adenopathy, nodules or masses."
    ("497", "IMPRESSION", [NF], []),  # "Normal chest."
    (
        "2130",
        "IMPRESSION",
        [CM, LL, ED, PE],
        [],
    ),  # "Cardiomegaly with mild interstitial edema ... 17 mm nodular opacity ..."
    (
        "2709",
        "IMPRESSION",
        [LO, PN],
        [],
    ),  # "Subtle medial left basilar opacity could represent early pneumonia."
    (
        "2135",
        "FINDINGS",
        [CM, PE],
        [CON, PTX],
    ),  # "There is no focal consolidation. ... small effusions. No pneumothorax ..."
    (
        "3087",
        "FINDINGS",
        [CM, AT],
        [],
    ),  # "The heart is enlarged. ... There is adjacent compressive atelectasis."
    (
        "3353",
        "FINDINGS",
        [CM, ED],
        [LO],
    ),  # "... a pericardial effusion on an abdominal CT" is not a pleural effusion
    ("84", "IMPRESSION", [NF], []),  # "Low lung volumes. No acute pulmonary disease."
    ("377", "IMPRESSION", [NF], []),  # "No evidence of active disease."
    (
        "3834",
        "FINDINGS",
        [],
        [LO, PTX, PE],
    ),  # "No focal infiltrate, pneumothorax or pleural effusion identified."
    ("912", "FINDINGS", [], [CON, PTX, PE]),  # "Heart size is normal." names no label
    (
        "2887",
        "FINDINGS",
        [LO, FX],
        [PTX, PE],
    ),  # "... opacities in the lung bases ... Displaced fracture of the ... clavicle."
]


@pytest.mark.parametrize(("report_id", "section", "present", "negated"), REPORT_CASES)
def test_report_mentions(
    iu_reports, report_id: str, section: str, present: list[str], negated: list[str]
) -> None:
    text = iu_reports[report_id][section]
    found_present, found_negated = find_mentions(text)
    assert sorted(found_present) == sorted(present), text
    assert sorted(found_negated) == sorted(negated), text


def test_no_acute_impressions_read_as_no_finding(iu_reports) -> None:
    phrase = re.compile(
        r"^\s*No acute cardiopulmonary (?:process|abnormality|abnormalities|disease|findings?)\.?\s*$"
    )
    impressions = [
        r.get("IMPRESSION", "") for r in iu_reports.values() if phrase.match(r.get("IMPRESSION", ""))
    ]
    assert len(impressions) > 100  # a common impression in this corpus
    assert all(find_mentions(text) == ([NF], []) for text in impressions)


def test_whole_corpus_reads_consistently(iu_reports) -> None:
    sections = [text for report in iu_reports.values() for text in report.values() if text]
    assert len(sections) > 5000
    for text in sections:
        present, negated = find_mentions(text)
        assert not set(present) & set(negated), text
        assert NF not in present or set(present) <= {NF, SD}, text


def test_report_as_completion_without_tags(iu_reports) -> None:
    report = iu_reports["2485"]
    # IU 2485 impression: "Small to moderate sized bilateral pleural effusions with adjacent infiltrate or atelectasis."
    completion = f"Findings: {report['FINDINGS']}\nImpression: {report['IMPRESSION']}"
    strict = parse_completion(completion)
    assert not strict.valid and strict.labels == []
    lenient = parse_completion(completion, ParserConfig(mode="lenient"))
    assert lenient.labels == [LO, AT, PE]
