#!/usr/bin/env bash
# The embedded default, end to end on this machine: set up, start a Ray head node, run the driver
# (tiny MedGemma-architecture model + phantom X-rays on CPU), stop the Ray node again.
#
#   scripts/demo.sh [extra `cxr-rl train` options, e.g. --run-dir runs/demo2 --grpo-steps 10]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
port=${CXR_RL_RAY_PORT:-6390}
.venv/bin/ray start --head --port="$port" --num-cpus="${CXR_RL_RAY_CPUS:-2}" --include-dashboard=false --disable-usage-stats >/dev/null
trap '.venv/bin/ray stop >/dev/null 2>&1 || true' EXIT
.venv/bin/cxr-rl train --address "127.0.0.1:$port" "$@"
