#!/usr/bin/env bash
# The embedded default, end to end on this machine: set up, then run the driver (tiny
# MedGemma-architecture model + phantom X-rays on CPU) on a Ray cluster of its own.
#
#   scripts/demo.sh [extra `cxr-rl train` options, e.g. --run-dir runs/demo2 --grpo-steps 10]
#
# The cluster is private to the run (`--address local`, deploy/local_cluster.py): started inside the
# driver under a temporary folder, listening on 127.0.0.1 only, with Ray's token authentication,
# and stopped with the run, never touching another Ray cluster on the machine. The driver replaces
# this script's process, so Ctrl-C and SIGTERM reach it directly: it stops every process it
# started, prints the step it reached and the command that resumes the run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
exec .venv/bin/cxr-rl train --address local "$@"
