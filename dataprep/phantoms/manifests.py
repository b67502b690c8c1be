"""JSONL manifests of a phantom set, per format and official split, read back through the same
loaders a real copy goes through (so the manifests are what real data would give)."""

import os
from collections import defaultdict
from pathlib import Path

from dataprep.chexpert import load_chexpert
from dataprep.loading import LoadOptions, LoadResult
from dataprep.mimic import load_mimic
from dataprep.nih import load_nih
from shared.manifest import ManifestRecord, write_manifest


def write_phantom_manifests(out: Path) -> dict[str, int]:
    """Write `manifests/<format>_<split>.jsonl` with image paths relative to the manifest folder,
    so the phantom folder can be moved; return manifest name -> records. Manifests left from an
    earlier run into the same folder are removed, since their splits may no longer exist."""
    options = LoadOptions(progress=False, strict=True)
    manifest_dir = out / "manifests"
    loaded: dict[str, LoadResult] = {
        "mimic": load_mimic(out / "mimic", options),
        "chexpert": load_chexpert(out / "chexpert", options),
        "nih": load_nih(out / "nih", options),
    }
    written = {}
    for source, result in loaded.items():
        by_split: dict[str, list[ManifestRecord]] = defaultdict(list)
        for record in result.records:
            relative = os.path.relpath(record.image, manifest_dir.resolve())
            by_split[record.split].append(record.model_copy(update={"image": relative}))
        for split, records in sorted(by_split.items()):
            path = write_manifest(records, manifest_dir / f"{source}_{split}.jsonl")
            written[path.name] = len(records)
    for stale in manifest_dir.glob("*.jsonl"):  # from an earlier run into the same folder
        if stale.name not in written:
            stale.unlink()
    return written
