"""Rule-based normaliser from what a model (or a radiologist) writes to the 14 CheXpert labels.

Two readers share one synonym table:
- `read_item` reads one entry of a label list ("small left effusion", "PTX", "no pneumothorax",
  "possible pneumonia") as a label, a negated mention, a hedged mention or an invalid string;
- `find_mentions` reads free text (a report sentence, a reasoning narrative) NegEx-style: a
  mention is negated when a negation trigger precedes it in its clause ("No pneumothorax or
  pleural effusion") or a post-trigger follows it ("pneumothorax is not seen").

Everything is compared in a normalised word form: lower case, punctuation and articles dropped,
plurals made singular, and severity / laterality / location modifiers ("small", "left lower lobe")
dropped, so "Small bilateral pleural effusions" and "pleural effusion" read alike.
"""

import re
from dataclasses import dataclass
from typing import Literal

from rewards import label_vocabulary as vocabulary
from shared.labels import CHEXPERT_LABELS, NO_FINDING

_WORD = re.compile(r"[a-z0-9]+")
_BULLET = re.compile(r"^\s*(?:[-*•·>]+|\(?\d+[.)]|\(?[a-z][.)](?=\s))\s*", re.IGNORECASE)
_LEADING_FILLER = re.compile(r"^(?:(?:there\s+(?:is|are)|or|and|nor)\s+)+", re.IGNORECASE)
_PARENTHETICAL = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
_CLAUSE_BREAK = re.compile(r"[.;:!?\n]+|\b(?:but|however|although|though|except)\b", re.IGNORECASE)
_COMPOUND_SPLIT = re.compile(r"\s+(?:and|with)\s+|\s*[/&+]\s*", re.IGNORECASE)
_ALTERNATIVE_SPLIT = re.compile(r"\s+(?:and|with|or|nor)\s+|\s*[/&+]\s*", re.IGNORECASE)
# A pre-negation runs across commas ("no effusion, pneumothorax, or consolidation") but stops where
# a new statement starts ("..., there is edema", "... and the heart is enlarged").
_STATEMENT_BREAK = re.compile(r",\s*(?=(?:there|the|a|an)\b)|\band\s+(?=(?:there|the)\b)", re.IGNORECASE)


def singular(word: str) -> str:
    if word in vocabulary.UNCHANGED_WORDS or len(word) <= 3:
        return word
    if word == "pneumothoraces":
        return "pneumothorax"
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith(("ss", "is", "us", "os")):
        return word
    return word[:-1] if word.endswith("s") else word


def words(text: str) -> tuple[str, ...]:
    """The normalised word form every comparison uses."""
    tokens = (singular(token) for token in _WORD.findall(text.lower().replace("_", " ")))
    return tuple(token for token in tokens if token not in vocabulary.MODIFIERS)


def _phrase_table(*tables: dict[str, tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    lookup: dict[tuple[str, ...], str] = {}
    for table in tables:
        for label, phrases in table.items():
            for phrase in (label, *phrases):
                lookup[words(phrase)] = label
    return lookup


_FREE_TEXT_PHRASES = _phrase_table(vocabulary.SYNONYMS) | {
    words(phrase): "" for phrase in vocabulary.NOT_LABELS
}
_ITEM_PHRASES = _phrase_table(vocabulary.SYNONYMS, vocabulary.ITEM_ONLY_SYNONYMS)
_LONGEST_PHRASE = max(len(phrase) for phrase in _ITEM_PHRASES)
_NEGATIONS = tuple(sorted({words(t) for t in vocabulary.NEGATION_TRIGGERS}, key=len, reverse=True))
_POST_NEGATIONS = tuple(sorted({words(t) for t in vocabulary.POST_NEGATION_TRIGGERS}, key=len, reverse=True))
_PSEUDO = tuple(sorted({words(t) for t in vocabulary.PSEUDO_NEGATIONS}, key=len, reverse=True))
_HEDGES = tuple(sorted({words(t) for t in vocabulary.HEDGE_TRIGGERS}, key=len, reverse=True))
assert set(_ITEM_PHRASES.values()) == set(CHEXPERT_LABELS)
assert all(phrase for phrase in _ITEM_PHRASES), "a synonym is made only of modifier words"


@dataclass(frozen=True, slots=True)
class ItemReading:
    """How one list entry reads: `labels` are the labels it names (several for "A and B")."""

    kind: Literal["label", "negated", "hedged", "invalid", "empty"]
    labels: tuple[str, ...] = ()


def _starts_with(tokens: tuple[str, ...], triggers: tuple[tuple[str, ...], ...]) -> int:
    """Length of the longest trigger that `tokens` starts with, else 0."""
    for trigger in triggers:
        if tokens[: len(trigger)] == trigger:
            return len(trigger)
    return 0


def _contains(tokens: tuple[str, ...], triggers: tuple[tuple[str, ...], ...]) -> bool:
    return any(
        tokens[start : start + len(trigger)] == trigger
        for trigger in triggers
        for start in range(len(tokens))
    )


def _labels_of(text: str, alternatives: bool = False) -> tuple[str, ...] | None:
    """The label(s) a short phrase names: the whole phrase, or every part of "A and B" / "A/B"
    (also "A or B" when `alternatives`, as in "no A or B")."""
    label = _ITEM_PHRASES.get(words(text))
    if label is not None:
        return (label,)
    splitter = _ALTERNATIVE_SPLIT if alternatives else _COMPOUND_SPLIT
    parts = [part for part in splitter.split(text) if words(part)]
    if len(parts) < 2:
        return None
    labels = [_ITEM_PHRASES.get(words(part)) for part in parts]
    if any(label is None for label in labels):
        return None
    return tuple(dict.fromkeys(labels))  # type: ignore[arg-type]


def clean_item(item: str) -> str:
    """An entry without bullets, numbering, quotes, brackets, a leading "there is" / "or"."""
    text = _BULLET.sub("", item.strip())
    text = text.strip().strip("\"'`*_[]{}").strip()
    text = _LEADING_FILLER.sub("", text)
    return text.rstrip(".!").strip()


def read_item(item: str, allow_hedges: bool = False, free_text_fallback: bool = False) -> ItemReading:
    """Read one entry of a label list. Hedged entries are labels only when `allow_hedges`;
    `free_text_fallback` reads an entry no phrase matches as free text (lenient parsing)."""
    text = clean_item(item)
    if not text:
        return ItemReading("empty")
    hedged = "?" in text or _contains(words(text), _HEDGES)
    labels = None if hedged else _labels_of(text)
    if labels is not None:
        return ItemReading("label", labels)

    # "Edema: yes", "Pneumothorax - absent" (label-confidence lists)
    name, sep, answer = text.rpartition(":") if ":" in text else text.rpartition(" - ")
    if sep and answer.strip().lower() in vocabulary.PRESENT_ANSWERS | vocabulary.ABSENT_ANSWERS:
        named = _labels_of(name)
        if named is not None:
            present = answer.strip().lower() in vocabulary.PRESENT_ANSWERS
            return ItemReading("label" if present else "negated", named)

    tokens = words(_PARENTHETICAL.sub(" ", text).replace("?", " "))
    if not hedged:
        negation = _starts_with(tokens, _NEGATIONS) if not _starts_with(tokens, _PSEUDO) else 0
        if negation:
            named = _labels_of(" ".join(tokens[negation:]), alternatives=True)
            if named is not None:
                return ItemReading("negated", named)
        for post in _POST_NEGATIONS:
            if tokens[-len(post) :] == post:
                named = _labels_of(
                    " ".join(tokens[: -len(post)]).removesuffix(" is").removesuffix(" are"), True
                )
                if named is not None:
                    return ItemReading("negated", named)
    else:
        hedge = _starts_with(tokens, _HEDGES)
        rest = tokens[hedge:] if hedge else tuple(t for t in tokens if (t,) not in _HEDGES)
        named = _labels_of(" ".join(rest))
        if named is not None:
            return ItemReading("label" if allow_hedges else "hedged", named)

    labels = _labels_of(" ".join(tokens))  # with the parenthetical dropped
    if labels is not None:
        return ItemReading("label", labels)
    if free_text_fallback:
        present, negated = find_mentions(text)
        if present:
            return ItemReading("label", tuple(present))
        if negated:
            return ItemReading("negated", tuple(negated))
    return ItemReading("invalid")


def _match_phrases(tokens: tuple[str, ...]) -> list[tuple[int, int, str]]:
    """Longest-first phrase matches as (start, end, label), not overlapping."""
    matches, start = [], 0
    while start < len(tokens):
        for length in range(min(_LONGEST_PHRASE, len(tokens) - start), 0, -1):
            label = _FREE_TEXT_PHRASES.get(tokens[start : start + length])
            if label is not None:
                matches.append((start, start + length, label))
                start += length
                break
        else:
            start += 1
    return matches


def _negation_scopes(tokens: tuple[str, ...]) -> tuple[int | None, list[int]]:
    """Where the first pre-negation starts (it runs to the end of the statement) and where
    post-negations sit. A word in both lists ("absent", "resolved") counts both ways."""
    pre: int | None = None
    posts: list[int] = []
    position = 0
    while position < len(tokens):
        rest = tokens[position:]
        pseudo = _starts_with(rest, _PSEUDO)
        if pseudo:
            position += pseudo
            continue
        if _starts_with(rest, _POST_NEGATIONS):
            posts.append(position)
        if pre is None and _starts_with(rest, _NEGATIONS):
            pre = position
        position += 1
    return pre, posts


def find_mentions(text: str) -> tuple[list[str], list[str]]:
    """(present, negated) labels mentioned in free text, each in CheXpert order.

    Hedged mentions ("possible pneumonia") count as present. As in the CheXpert labeler, No Finding
    holds only when no pathology (other than support devices) is mentioned as present.
    """
    present: set[str] = set()
    negated: set[str] = set()
    for clause in _CLAUSE_BREAK.split(text):
        for statement in _STATEMENT_BREAK.split(clause):
            tokens = words(statement)
            if not tokens:
                continue
            pre, posts = _negation_scopes(tokens)
            for start, end, label in _match_phrases(tokens):
                if not label:
                    continue
                if label == NO_FINDING:
                    present.add(label)
                elif (pre is not None and pre < start) or any(post >= end for post in posts):
                    negated.add(label)
                else:
                    present.add(label)
    if present - {NO_FINDING, "Support Devices"}:
        present.discard(NO_FINDING)
    negated -= present
    return [label for label in CHEXPERT_LABELS if label in present], [
        label for label in CHEXPERT_LABELS if label in negated
    ]
