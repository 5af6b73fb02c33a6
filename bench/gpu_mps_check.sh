#!/usr/bin/env bash
# `ablate run --per-gpu 4 --mps` on an H200 (driver 580.159.04, torch 2.11+cu130): every
# packed LightGCN run died with "CUDA error: an illegal instruction was encountered".
# This is the diagnosis in one device call (about 4 minutes):
#
#   1. mps_probe.txt     plain PyTorch clients under ablate's MPS daemon, op family by op
#                        family, launch-blocking (bench/gpu_mps_probe.py)
#   2. mps_blocking.txt  the packed MPS sweep, 2 epochs, CUDA_LAUNCH_BLOCKING=1: the failed
#                        runs' log tails name the op that faulted
#   3. mps_eager.txt     sequential vs packed under MPS, 4 epochs, CUDA_MODULE_LOADING=EAGER
#
# What it showed on 2026-11-28 (H200): 1 passed (4 clients, all families); 2 passed (4
# runs x 2 epochs, 33 s); 3 failed like the first time: thrust merge_sort / transform in
# training steps faulted at the moment the first runs reached their first evaluation, and
# one run's first cuBLAS call failed (CUBLAS_STATUS_NOT_INITIALIZED). Reading: a client
# loading CUDA library code while other clients' kernels run. ablate now loads the
# libraries in every worker before any run starts (worker._load_cuda_libraries, with
# CUDA_MODULE_LOADING=EAGER exported by the daemon), so phase 3 now also tests that.
#
#   WHEELS=.whl ABLATE_DATA=.data OUT=$OUT bash bench/gpu_mps_check.sh
set -u
cd "$(dirname "$0")/.."
. bench/_gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_mode --format=csv,noheader

t "1/3 plain PyTorch clients under MPS"
timeout 70 python3 bench/gpu_mps_probe.py --procs 4 --seconds 3 2>&1 | grep -v -i warn | tee "$OUT/mps_probe.txt"

t "2/3 packed under MPS, launch-blocking"
CUDA_LAUNCH_BLOCKING=1 PHASES="packed_mps" MPS_PHASE=1 SKIP_AUTO=1 EPOCHS=2 ABLATE_DATA=$DATA OUT=$OUT/b \
  timeout 90 bash bench/gpu_sweep.sh > "$OUT/mps_blocking.txt" 2>&1
grep -E "^== |exit|\| .*(Error|error|File)" "$OUT/mps_blocking.txt" | grep -v -i warn | tail -30

t "3/3 sequential vs packed under MPS, eager module loading"
CUDA_MODULE_LOADING=EAGER PHASES="seq packed_mps" MPS_PHASE=1 SKIP_AUTO=1 EPOCHS=4 ABLATE_DATA=$DATA OUT=$OUT/e \
  timeout 170 bash bench/gpu_sweep.sh > "$OUT/mps_eager.txt" 2>&1
grep -E "^== |exit|throughput|GPU util|\| .*(Error|error)" "$OUT/mps_eager.txt" | grep -v -i warn | tail -20
t "done"
