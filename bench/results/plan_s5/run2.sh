#!/bin/bash
# §5 recipe plans, run side by side (niced).
cd /work/wt/tpu
source /work/main/.venv/bin/activate
export PYTHONPATH=$PWD
O=bench/results/plan_s5
P="--price_per_chip_hour=2.0 --spot_price_per_chip_hour=0.6"
name=$1; shift
echo "=== $(date -u +%FT%TZ) start $name: $*" >> $O/log.txt
( time nice -n 10 python -m bert_jax.plan "$@" $P ) > $O/$name.out 2>&1
echo "=== $(date -u +%FT%TZ) end $name rc=$?" >> $O/log.txt
