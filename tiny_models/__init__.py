"""Random-weight tiny models of the real architectures (MedGemma-4B, Qwen2.5-VL-3B), built offline
with their own tokenizer, processor and chat template, so tests and the demo run without a model hub."""

import functools
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from shared.atomic_files import replace_folder
from shared.errors import UserError

ARCHITECTURES = ("medgemma", "qwen2.5-vl")  # tiny: seconds to build, megabytes
# Real widths, vocabulary and image size with few layers (tiny_models.medgemma_shape): gigabytes.
SHAPE_ARCHITECTURES = ("medgemma-4b-shape",)
SHAPE_BUILDER_VERSION = 1
BUILDER_VERSION = 4  # bump when a builder changes what it writes; cached models are rebuilt
# (3: MedGemma's projector drawn, so the model sees; no constant norm scales or biases)
# (4: MedGemma's projector fitted to phantom films, so images differ in what the model reads)
STAMP = "cxr-rl-tiny-model.json"


def build_tiny_model(arch: str, out: str | Path, seed: int = 0, layers: int | None = None) -> Path:
    """Build (or reuse, when `out` already holds this arch/seed/builder version) a tiny model.
    `layers`: text and vision layers of a real-shape model (default 1); the tiny ones have theirs."""
    known = ARCHITECTURES + SHAPE_ARCHITECTURES
    if arch not in known:
        raise UserError(f"unknown --arch {arch!r}; choose one of {', '.join(known)}")
    if layers is not None and arch not in SHAPE_ARCHITECTURES:
        raise UserError(f"--layers applies to {', '.join(SHAPE_ARCHITECTURES)} only, not --arch {arch}")
    out = Path(out)
    wanted = {"arch": arch, "seed": seed, "builder_version": BUILDER_VERSION}
    if arch in SHAPE_ARCHITECTURES:
        wanted = {"arch": arch, "seed": seed, "layers": layers or 1, "builder_version": SHAPE_BUILDER_VERSION}
    stamp = out / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    except OSError as error:
        raise UserError(f"cannot write the model to {out}: {error.strerror}") from None
    try:
        _builder(arch, layers)(staging, seed)
        (staging / STAMP).write_text(json.dumps(wanted))
        replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def default_model_dir(arch: str, seed: int, cache_root: str | Path) -> Path:
    key = hashlib.sha256(f"{arch}:{seed}:{BUILDER_VERSION}".encode()).hexdigest()[:8]
    return Path(cache_root) / f"tiny-{arch}-seed{seed}-{key}"


def _builder(arch: str, layers: int | None):
    if arch in SHAPE_ARCHITECTURES:
        # each builder imports torch and transformers (seconds): only the one asked for
        from tiny_models.medgemma_shape import build

        return functools.partial(build, layers=layers or 1)
    if arch == "medgemma":
        # each builder imports torch and transformers (seconds): only the one asked for
        from tiny_models.medgemma import build
    else:
        # each builder imports torch and transformers (seconds): only the one asked for
        from tiny_models.qwen_vl import build
    return build
