#!/bin/bash
# §5 plan runs, sequential, niced.
cd /work/wt/tpu
source /work/main/.venv/bin/activate
export PYTHONPATH=$PWD
O=bench/results/plan_s5
P="--price_per_chip_hour=2.0 --spot_price_per_chip_hour=0.6"
run() { name=$1; shift; echo "=== $(date -u +%FT%TZ) start $name: $*" >> $O/log.txt
  ( time nice -n 10 python -m bert_jax.plan "$@" ) > $O/$name.out 2>&1
  echo "=== $(date -u +%FT%TZ) end $name rc=$?" >> $O/log.txt; }
run large_v3-8_512_remat_dp1 --config=configs/pretrain.py:large --topology=v3-8 --config.max_seq_length=512 --config.max_predictions_per_seq=80 --config.phase2_start_step=0 --config.model.remat_policy=full --config.mesh.ici_shape='(8,1,1)' --config.optimizer.grad_accum_steps=1 --json $P
run base_v3-32 --config=configs/pretrain.py:base --topology=v3-32 --recipe --json $P
run large_v3-128 --config=configs/pretrain.py:large --topology=v3-128 --recipe --json $P
run large_v3-8_512_fsdp_mb8 --config=configs/pretrain.py:large --topology=v3-8 --config.max_seq_length=512 --config.max_predictions_per_seq=80 --config.phase2_start_step=0 --config.mesh.ici_shape='(1,8,1)' --config.optimizer.grad_accum_steps=8 --json $P
