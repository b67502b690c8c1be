"""Fixtures shared by the test tiers: tiny models and phantom data the project builds itself, the
real chest X-rays when present, and a local Ray cluster that the tests stop again."""

import os
from pathlib import Path

import pytest

REAL_CXR_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-cxr"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="module")
def one_torch_thread():
    """The tiny models' matrices are too small to gain from threads, and OpenMP threads spinning on
    a busy 2-core machine slow each step tenfold. For a module: `pytest.mark.usefixtures`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_medgemma(tmp_path_factory) -> Path:
    from tiny_models import build_tiny_model

    return build_tiny_model("medgemma", tmp_path_factory.mktemp("models") / "tiny-medgemma", seed=0)


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> Path:
    from tiny_models import build_tiny_model

    return build_tiny_model("qwen2.5-vl", tmp_path_factory.mktemp("models") / "tiny-qwen", seed=0)


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    from dataprep.phantoms.datasets import make_phantoms

    root = tmp_path_factory.mktemp("phantoms")
    make_phantoms(root, n=48, seed=0)
    return root


@pytest.fixture(scope="session")
def real_cxr_dir() -> Path:
    if not (REAL_CXR_DIR / "00000001_000.png").is_file():
        pytest.skip(
            f"real NIH chest X-rays not present (expected beside the project at {REAL_CXR_DIR.name}/)"
        )
    return REAL_CXR_DIR


@pytest.fixture(scope="session")
def rg1_dicom_path() -> Path:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("RG1_UNCR.dcm"))


@pytest.fixture(scope="session")
def local_ray():
    import ray

    # address="local": a private cluster, never a `ray start` cluster that happens to run here
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, namespace="cxr-rl-tests", log_to_driver=False
    )
    yield ray
    ray.shutdown()
