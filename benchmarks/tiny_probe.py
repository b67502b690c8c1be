"""Do the tiny models see? A linear probe on each tiny model's image features (`tiny_models.probe`),
macro-F1 on held-out MIMIC-style phantoms and on the held-out patients' NIH-style films, beside the
baseline that predicts every label seen in training.

    python benchmarks/tiny_probe.py --help

Builds the tiny models and the phantoms in a temporary folder (or --work-dir). Deterministic for
the seeds. The last line printed is one JSON object of the figures.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

# Run as a file, this folder would come first on the import path and its neighbours
# (benchmarks/rewards.py) would shadow the project's packages: put the project root there instead.
if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/tiny_probe.py",
        description="Linear-probe macro-F1 of each tiny model's image features on phantom X-rays, beside "
        "the predict-every-seen-label baseline. Prints a table, then one JSON line.",
    )
    parser.add_argument("--n", type=int, default=600, help="phantom studies to draw (default 600)")
    parser.add_argument("--seed", type=int, default=0, help="phantom, model and split seed (default 0)")
    parser.add_argument(
        "--arch", action="append", help="medgemma and/or qwen2.5-vl (repeatable; default both)"
    )
    parser.add_argument("--work-dir", type=Path, help="folder for models and phantoms (default: temporary)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from dataprep.phantoms.datasets import make_phantoms
    from tiny_models import ARCHITECTURES, build_tiny_model
    from tiny_models.probe import phantom_probe

    torch.set_num_threads(1)  # deterministic reductions, and no spinning threads on a shared machine
    archs = args.arch or list(ARCHITECTURES)
    with tempfile.TemporaryDirectory(prefix="cxr-rl-probe-") as scratch:
        work = args.work_dir or Path(scratch)
        phantoms = work / f"phantoms-n{args.n}-seed{args.seed}"
        if not (phantoms / "phantoms.json").is_file():
            make_phantoms(phantoms, n=args.n, seed=args.seed)
        reports = {
            arch: phantom_probe(
                build_tiny_model(arch, work / f"tiny-{arch}", seed=args.seed), phantoms, args.seed
            )
            for arch in archs
        }
    print(
        f"{'model':<12} {'dim':>5} {'distinct':>8} {'differs':>7}  macro-F1 (baseline)  micro-F1  "
        "OOD macro-F1 (baseline)"
    )
    for arch, report in reports.items():
        print(
            f"{arch:<12} {report.feature_dim:>5} {report.distinct_features:>8} "
            f"{report.between_image_share:>7.1%}  "
            f"{report.probe_macro_f1:.3f} ({report.baseline_macro_f1:.3f})      {report.probe_micro_f1:.3f}     "
            f"{report.ood_probe_macro_f1:.3f} ({report.ood_baseline_macro_f1:.3f})"
        )
    first = next(iter(reports.values()))
    print(f"images: {first.n_train} train, {first.n_held_out} held out, {first.n_ood} OOD")
    print("differs: the share of the image features' mean square that varies between images")
    print(json.dumps({arch: report.model_dump(exclude={"model"}) for arch, report in reports.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
