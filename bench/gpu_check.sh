#!/usr/bin/env bash
# Every GPU measurement of this project in one command, sized for one device call
# (about 8 minutes on an H100). Run it on the lent GPU machine, then read $OUT/*.txt:
#
#   0. graph_check.txt  LightGCNOT's CUDA-graphed draw and plans equal eager (gpu_graph_check.py)
#   1. ot_ops.txt       kernels per training step, LightGCNOT vs LightGCN (bench/ot_ops.py)
#      epoch_host.txt   ml-1m LightGCN epoch: RecBole's loop vs ablate.fastpath, time, equal
#                       losses, host syncs per epoch (bench/epoch_host.py)
#   2. ot_overhead.txt  ml-1m epoch time and peak GPU memory, LightGCNOT vs LightGCN, in one
#                       run of bench/ot_overhead.py (target: ratio <= 1.5, with ot_detach_plan=true); the same with
#                       PyTorch's plans instead of the Triton kernels (ot_overhead_torch.txt); and
#                       with ot_compile=true at the end, if time is left (ot_overhead_compile.txt);
#                       ot_overhead_gsc.txt: the default, GSC's gradient through the plans
#   3. gpu_sweep.txt    4 ml-1m LightGCN runs: --per-gpu 1 vs --per-gpu 4 vs --per-gpu 4 --mps
#                       (bench/gpu_sweep.sh; target: packed throughput >= 2.5x)
#
# On a bare machine with CUDA torch but without RecBole and friends, bring their wheels
# and the data (git-ignored folders made here by bench/gpu_wheels.sh; carry both):
#
#   WHEELS=.whl ABLATE_DATA=.data OUT=$OUT bash bench/gpu_check.sh
#
# Env: WHEELS (folder of wheels to put on PYTHONPATH first), ABLATE_DATA (folder holding
# ml-1m/), OUT (default bench/out), OT_EPOCHS (3), SWEEP_EPOCHS (4), TOTAL_S (570: the extra
# phase only starts with 150 s left and stops by then; a device command may run 600 s).
set -u
cd "$(dirname "$0")/.."
. bench/_gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"

t "0/3 CUDA-graphed steps equal eager (bench/gpu_graph_check.py)"
timeout 90 python3 bench/gpu_graph_check.py 2>&1 | grep -v -i "warn" | tee "$OUT/graph_check.txt" | grep -E "PASS|FAIL|passed|failed"

t "1/3 kernels per step; host work of an epoch, RecBole's loop vs ablate's"
timeout 120 python3 bench/ot_ops.py --device cuda --dataset ml-1m --data-path "$DATA" -p ot_detach_plan=true 2>&1 \
  | grep -v -i "warn" | tee "$OUT/ot_ops.txt" | tail -16
timeout 120 python3 bench/epoch_host.py --device cuda --dataset ml-1m --data-path "$DATA" --epochs 2 2>&1 \
  | grep -v -i "warn" | tee "$OUT/epoch_host.txt" | tail -4

t "2/3 OT epoch overhead on ml-1m (ot_solver=auto: Triton plans), then with PyTorch's plans"
timeout 200 python3 bench/ot_overhead.py --device cuda --dataset ml-1m --data-path "$DATA" --epochs "${OT_EPOCHS:-3}" \
  -p ot_detach_plan=true 2>&1 | grep -v -i "warn" | tee "$OUT/ot_overhead.txt" | tail -6
timeout 150 python3 bench/ot_overhead.py --device cuda --dataset ml-1m --data-path "$DATA" --epochs "${OT_EPOCHS:-3}" \
  -p ot_detach_plan=true -p ot_solver=torch 2>&1 | grep -v -i "warn" | tee "$OUT/ot_overhead_torch.txt" | tail -4
timeout 150 python3 bench/ot_overhead.py --device cuda --dataset ml-1m --data-path "$DATA" --epochs 2 2>&1 \
  | grep -v -i "warn" | tee "$OUT/ot_overhead_gsc.txt" | tail -4

t "3/3 packing: sequential, packed, packed under MPS"
EPOCHS=${SWEEP_EPOCHS:-4} SKIP_AUTO=1 MPS_PHASE=1 BUDGET_S=${SWEEP_BUDGET_S:-200} ABLATE_DATA=$DATA OUT=$OUT \
  timeout 270 bash bench/gpu_sweep.sh > "$OUT/gpu_sweep.txt" 2>&1
grep -E "^== |throughput|GPU util|exit" "$OUT/gpu_sweep.txt" | tail -14
LEFT=$(( ${TOTAL_S:-570} - ($(date +%s) - START) ))
if [ $LEFT -gt 150 ]; then
t "extra: ot_overhead with ot_compile=true (its first epoch, which compiles, is not timed)"
timeout $LEFT python3 bench/ot_overhead.py --device cuda --dataset ml-1m --data-path "$DATA" --epochs "${OT_EPOCHS:-3}" \
  -p ot_detach_plan=true -p ot_compile=true 2>&1 | grep -v -i "warn" | tee "$OUT/ot_overhead_compile.txt" | tail -6
else echo "== extra: ot_compile=true skipped (time)"; fi
t "done"
