#!/usr/bin/env bash
# A real multi-host run on one machine: N jax.distributed processes on
# 127.0.0.1, each with D CPU devices (gloo collectives), one global mesh.
#
#   N=2 D=4 VARIANT=demo WORKDIR=/tmp/mh bash launch/local_multiprocess.sh [--config.X=Y ...]
set -euo pipefail
N="${N:-2}"
D="${D:-4}"
VARIANT="${VARIANT:-demo}"
WORKDIR="${WORKDIR:-workdir/multiprocess}"
PORT="${PORT:-$((20000 + RANDOM % 20000))}"
cd "$(dirname "$0")/.."
pids=()
for ((i = 0; i < N; i++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=$D" JAX_PLATFORMS=cpu \
  python -m bert_jax.main --config="configs/pretrain.py:$VARIANT" \
      --workdir="$WORKDIR" --coordinator_address="127.0.0.1:$PORT" \
      --num_processes="$N" --process_id="$i" "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
