#!/usr/bin/env bash
# Pre-trains on a Cloud TPU v3 pod slice, as Google trained BERT (BERT-Base
# on 4 Cloud TPUs = 16 chips, BERT-Large on 16 Cloud TPUs = 64 chips).
# Needs the gcloud CLI, a project with TPU quota and a GCS bucket. It cannot
# be exercised from this repository's CI (no TPU, no network, no gcloud), so
# read it before running it.
#
#   TPU_NAME=bert-large ZONE=europe-west4-a ACCELERATOR=v3-128 \
#   BUCKET=gs://my-bucket REPO=<git url> VARIANT=large bash launch/tpu_v3_pod.sh
#
# Data: make the shards once, on any machine, and copy them to the bucket:
#   python -m bert_jax.create_pretraining_data --input_file=... \
#       --output_dir=data_128 --max_seq_length=128 --max_predictions_per_seq=20 ...
#   python -m bert_jax.create_pretraining_data --input_file=... \
#       --output_dir=data_512 --max_seq_length=512 --max_predictions_per_seq=80 ...
#   gsutil -m cp -r data_128 data_512 $BUCKET/
# The bucket is mounted with gcsfuse at /gcs on every host, so the data, the
# Orbax checkpoints, TensorBoard and results.json all live in the bucket and
# a re-run of this script (after a preemption) resumes where it stopped.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${BUCKET:?set BUCKET}"
: "${REPO:?set REPO to the git URL of your bert_jax repository}"
ACCELERATOR="${ACCELERATOR:-v3-32}"
VARIANT="${VARIANT:-base}"
RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}"
BUCKET_NAME="${BUCKET#gs://}"
RUN="${RUN:-runs/$VARIANT}"
EXTRA_FLAGS="${EXTRA_FLAGS:-}"

if ! gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone="$ZONE" \
    >/dev/null 2>&1; then
  gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" \
      --accelerator-type="$ACCELERATOR" --version="$RUNTIME"
fi

# The same commands on every host of the slice (--worker=all).
# jax.distributed finds its peers from the TPU metadata (--jax_distributed);
# each host reads its 1/N of every global batch; process 0 writes logs,
# summaries and the exported model; Orbax writes the checkpoints from all.
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all \
    --command="
  set -e
  if ! command -v gcsfuse >/dev/null; then
    echo 'deb https://packages.cloud.google.com/apt gcsfuse-jammy main' |
      sudo tee /etc/apt/sources.list.d/gcsfuse.list
    curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg |
      sudo tee /etc/apt/trusted.gpg.d/gcsfuse.asc >/dev/null
    sudo apt-get update -q && sudo apt-get install -y -q gcsfuse
  fi
  sudo mkdir -p /gcs && sudo chown \$USER /gcs
  mountpoint -q /gcs || gcsfuse --implicit-dirs $BUCKET_NAME /gcs
  if [ ! -d bert_jax ]; then git clone $REPO bert_jax; fi
  cd bert_jax
  [ -d .venv ] || python3 -m venv .venv
  . .venv/bin/activate
  pip install -q -r requirements.txt -e . 'jax[tpu]==0.10.2'
  python -m bert_jax.main --jax_distributed \
      --config=configs/pretrain.py:$VARIANT --workdir=/gcs/$RUN \
      --config.data.data_dir=/gcs/data_128 \
      --config.data.phase2_data_dir=/gcs/data_512 \
      --config.model.dtype=bfloat16 --config.mesh.ici_shape='(-1,1,1)' \
      $EXTRA_FLAGS
"
