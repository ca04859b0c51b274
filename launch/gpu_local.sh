#!/usr/bin/env bash
# Pre-trains on the GPUs of one machine (one process, all local GPUs in the
# mesh, bf16 compute). Needs a CUDA build of jax: pip install 'jax[cuda12]'.
#
#   VARIANT=base WORKDIR=/tmp/bert_base bash launch/gpu_local.sh [--config.X=Y ...]
set -euo pipefail
VARIANT="${VARIANT:-base}"
WORKDIR="${WORKDIR:-workdir/$VARIANT}"
cd "$(dirname "$0")/.."
exec python -m bert_jax.main --config="configs/pretrain.py:$VARIANT" \
    --workdir="$WORKDIR" --config.model.dtype=bfloat16 "$@"
