#!/usr/bin/env bash
# Every GPU measurement of this project in one command, sized for one device call
# (about 8 minutes on an H100). Run it on the lent GPU machine, then read $OUT/*.txt:
#
#   0. graph_check.txt  LightGCNOT's CUDA-graphed draw and plans equal eager (bench/gpu/graph_check.py)
#   1. ot_ops.txt       kernels per training step, LightGCNOT vs LightGCN (bench/ot_ops.py)
#      epoch_host.txt   ml-1m LightGCN epoch: RecBole's loop vs ablate.fastpath, time, equal
#                       losses, host syncs per epoch (bench/epoch_host.py)
#   2. fused.txt        4 ml-1m LightGCN runs, --fuse off vs --fuse 4 (goal: >= 3x throughput),
#      fused8.txt       then 8 runs, --fuse off vs --fuse 8 (goal: >= 5x) (bench/fused.py)
#   3. ot_overhead.txt  ml-1m epoch time and peak GPU memory, LightGCNOT vs LightGCN, in one
#                       run of bench/ot_overhead.py (target: ratio <= 1.5, with ot_detach_plan=true);
#                       ot_overhead_gsc.txt: the default, GSC's gradient through the plans;
#                       at the end, if time is left: PyTorch's plans instead of the Triton
#                       kernels (ot_overhead_torch.txt), then ot_compile=true (ot_overhead_compile.txt)
#   4. gpu_sweep.txt    4 ml-1m LightGCN runs: --per-gpu 1 vs --per-gpu 4 vs --per-gpu 4 --mps
#                       (bench/gpu/sweep.sh; target: packed throughput >= 2.5x)
#
# On a bare machine with CUDA torch but without RecBole and friends, bring their wheels
# and the data (git-ignored folders made here by bench/gpu/setup.sh; carry both):
#
#   WHEELS=.whl ABLATE_DATA=.data OUT=$OUT bash bench/gpu/check.sh
#
# Env: WHEELS (folder of wheels to put on PYTHONPATH first), ABLATE_DATA (folder holding
# ml-1m/), OUT (default bench/out), OT_EPOCHS (3), SWEEP_EPOCHS (4), TOTAL_S (570: the extra
# phase only starts with 150 s left and stops by then; a device command may run 600 s).
set -u
cd "$(dirname "$0")/../.."
. bench/gpu/env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"

t "0/4 CUDA-graphed steps equal eager (bench/gpu/graph_check.py)"
timeout 90 python3 bench/gpu/graph_check.py 2>&1 | grep -v -i "warn" | tee "$OUT/graph_check.txt" | grep -E "PASS|FAIL|passed|failed"

t "1/4 kernels per step; host work of an epoch, RecBole's loop vs ablate's"
timeout 120 python3 bench/ot_ops.py --device cuda --dataset ml-1m --data-path "$DATA" -p ot_detach_plan=true 2>&1 \
  | grep -v -i "warn" | tee "$OUT/ot_ops.txt" | tail -16
timeout 120 python3 bench/epoch_host.py --device cuda --dataset ml-1m --data-path "$DATA" --epochs 2 2>&1 \
  | grep -v -i "warn" | tee "$OUT/epoch_host.txt" | tail -4

t "2/4 fused sweeps: 4 then 8 ml-1m LightGCN runs, --fuse off vs --fuse N"
timeout 110 python3 bench/fused.py --device cuda --dataset ml-1m --data-path "$DATA" --runs 4 --epochs 2 2>&1 \
  | grep -v -i "warn" | tee "$OUT/fused.txt" | tail -5
timeout 120 python3 bench/fused.py --device cuda --dataset ml-1m --data-path "$DATA" --runs 8 --epochs 1 2>&1 \
  | grep -v -i "warn" | tee "$OUT/fused8.txt" | tail -5

t "3/4 OT epoch overhead on ml-1m (ot_solver=auto: Triton plans), then GSC's gradient"
timeout 200 python3 bench/ot_overhead.py --device cuda --dataset ml-1m --data-path "$DATA" --epochs "${OT_EPOCHS:-3}" \
  -p ot_detach_plan=true 2>&1 | grep -v -i "warn" | tee "$OUT/ot_overhead.txt" | tail -6
timeout 150 python3 bench/ot_overhead.py --device cuda --dataset ml-1m --data-path "$DATA" --epochs 2 2>&1 \
  | grep -v -i "warn" | tee "$OUT/ot_overhead_gsc.txt" | tail -4

t "4/4 packing: sequential, packed, packed under MPS"
EPOCHS=${SWEEP_EPOCHS:-4} SKIP_AUTO=1 MPS_PHASE=1 BUDGET_S=${SWEEP_BUDGET_S:-200} ABLATE_DATA=$DATA OUT=$OUT \
  timeout 270 bash bench/gpu/sweep.sh > "$OUT/gpu_sweep.txt" 2>&1
grep -E "^== |throughput|GPU util|exit" "$OUT/gpu_sweep.txt" | tail -14
LEFT=$(( ${TOTAL_S:-570} - ($(date +%s) - START) ))
if [ $LEFT -gt 150 ]; then
t "extra: ot_overhead with PyTorch's plans instead of the Triton kernels"
timeout 140 python3 bench/ot_overhead.py --device cuda --dataset ml-1m --data-path "$DATA" --epochs "${OT_EPOCHS:-3}" \
  -p ot_detach_plan=true -p ot_solver=torch 2>&1 | grep -v -i "warn" | tee "$OUT/ot_overhead_torch.txt" | tail -4
else echo "== extra: PyTorch's plans skipped (time)"; fi
LEFT=$(( ${TOTAL_S:-570} - ($(date +%s) - START) ))
if [ $LEFT -gt 150 ]; then
t "extra: ot_overhead with ot_compile=true (its first epoch, which compiles, is not timed)"
timeout $LEFT python3 bench/ot_overhead.py --device cuda --dataset ml-1m --data-path "$DATA" --epochs "${OT_EPOCHS:-3}" \
  -p ot_detach_plan=true -p ot_compile=true 2>&1 | grep -v -i "warn" | tee "$OUT/ot_overhead_compile.txt" | tail -6
else echo "== extra: ot_compile=true skipped (time)"; fi
t "done"
