#!/usr/bin/env bash
# Pre-trains on a Cloud TPU v3 pod slice, as Google trained BERT (BERT-Base on
# a v3-32-sized slice, BERT-Large on v3-128). Needs the gcloud CLI and a GCS
# bucket; it cannot be exercised from this repository's CI (no TPU, no
# network), so read it before running it.
#
#   TPU_NAME=bert-large ZONE=europe-west4-a ACCELERATOR=v3-128 \
#   BUCKET=gs://my-bucket REPO=<git url> VARIANT=large bash launch/tpu_v3_pod.sh
#
# Data: make shards once (python -m bert_jax.create_pretraining_data ...)
# and copy them to $BUCKET/data_128 and $BUCKET/data_512 (phase 2).
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${BUCKET:?set BUCKET}"
ACCELERATOR="${ACCELERATOR:-v3-32}"
VARIANT="${VARIANT:-base}"
RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}"
: "${REPO:?set REPO to the git URL of your bert_jax repository}"
WORKDIR="${WORKDIR:-$BUCKET/runs/$VARIANT}"
EXTRA_FLAGS="${EXTRA_FLAGS:-}"

if ! gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone="$ZONE" >/dev/null 2>&1; then
  gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" \
      --accelerator-type="$ACCELERATOR" --version="$RUNTIME"
fi

# Same commands on every host of the slice; jax.distributed finds its peers
# from the TPU metadata (--jax_distributed), each host reads its 1/N of the
# shards, process 0 writes logs and exports; Orbax writes the checkpoints.
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="
  set -e
  if [ ! -d bert_jax ]; then git clone $REPO bert_jax; fi
  cd bert_jax
  python3 -m venv .venv && . .venv/bin/activate
  pip install -q -r requirements.txt -e . 'jax[tpu]==0.10.2'
  python -m bert_jax.main --jax_distributed \
      --config=configs/pretrain.py:$VARIANT --workdir=$WORKDIR \
      --config.data.data_dir=$BUCKET/data_128 \
      --config.data.phase2_data_dir=$BUCKET/data_512 \
      --config.mesh.ici_shape='(-1,1,1)' $EXTRA_FLAGS
"
