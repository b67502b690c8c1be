"""Regenerate `cooccurrence.json`: the label combinations of real CheXpert frontal images and how
often each occurs, which the phantom generator samples from.

Reads CheXpert's `train.csv` (the copy torchxrayvision ships as `chexpert_train.csv.gz` will do).
Positive = 1.0; uncertain (-1.0) counts as negative in the combination (U-Zeros) and is kept
separately as a per-label rate so phantoms can write some -1 labels. Combinations seen fewer than
`--min-count` times are left out (the table records how much of the data it covers).

    python -m dataprep.derive_cooccurrence [--csv PATH] [--out PATH] [--min-count 20]
"""

import argparse
import csv
import gzip
import importlib.util
import json
from collections import Counter
from pathlib import Path

from shared.atomic_files import write_atomically
from shared.errors import UserError
from shared.labels import CHEXPERT_LABELS

DEFAULT_TABLE = Path(__file__).with_name("cooccurrence.json")


def torchxrayvision_chexpert_csv() -> Path:
    """torchxrayvision's copy of CheXpert's train.csv, found without importing the package
    (which would import torch)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or spec.origin is None:
        raise UserError("torchxrayvision is not installed; pass --csv with CheXpert's train.csv")
    return Path(spec.origin).parent / "data" / "chexpert_train.csv.gz"


def derive_cooccurrence(csv_path: Path, min_count: int = 20) -> dict:
    """Count label combinations (U-Zeros) over frontal images of a CheXpert train CSV."""
    opener = gzip.open if csv_path.suffix == ".gz" else open
    combinations: Counter[tuple[str, ...]] = Counter()
    uncertain: Counter[str] = Counter()
    explicit_negative: Counter[str] = Counter()
    frontal = 0
    with opener(csv_path, "rt", newline="") as lines:
        for row in csv.DictReader(lines):
            if row.get("Frontal/Lateral") != "Frontal":
                continue
            frontal += 1
            positives = []
            for label in CHEXPERT_LABELS:
                value = row[label].strip()
                if value in ("1.0", "1"):
                    positives.append(label)
                elif value in ("-1.0", "-1"):
                    uncertain[label] += 1
                elif value in ("0.0", "0"):
                    explicit_negative[label] += 1
            combinations[tuple(positives)] += 1
    if frontal == 0:
        raise UserError(f"{csv_path}: no frontal rows (is this CheXpert's train.csv?)")
    kept = [(combo, count) for combo, count in combinations.most_common() if count >= min_count]
    kept_total = sum(count for _, count in kept)
    return {
        "source": csv_path.name,
        "frontal_images": frontal,
        "min_count": min_count,
        "coverage": round(kept_total / frontal, 4),
        "uncertain_rate": {label: round(uncertain[label] / frontal, 4) for label in CHEXPERT_LABELS},
        "explicit_negative_rate": {
            label: round(explicit_negative[label] / frontal, 4) for label in CHEXPERT_LABELS
        },
        "combinations": [{"labels": list(combo), "count": count} for combo, count in kept],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--csv", type=Path, help="CheXpert train CSV (.csv or .csv.gz); default: torchxrayvision's copy"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_TABLE, help="where to write the JSON table")
    parser.add_argument("--min-count", type=int, default=20, help="leave out combinations seen fewer times")
    args = parser.parse_args(argv)
    csv_path = args.csv or torchxrayvision_chexpert_csv()
    if not csv_path.is_file():
        raise SystemExit(f"CheXpert CSV not found: {csv_path}")
    table = derive_cooccurrence(csv_path, args.min_count)
    # One combination per line keeps the committed file small and its diffs readable.
    rows = ",\n".join("    " + json.dumps(entry) for entry in table.pop("combinations"))
    head = json.dumps(table, indent=2)[:-2]
    write_atomically(args.out, f'{head},\n  "combinations": [\n{rows}\n  ]\n}}\n')
    print(
        f"{args.out}: {rows.count(chr(10)) + 1} combinations covering {table['coverage']:.1%} of frontal images"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
