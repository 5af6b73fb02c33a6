#!/usr/bin/env bash
# The GPU measurements in one device call: TOTAL_S=480 s of work once the machine has
# started, which leaves room in a 10-minute call. Phases in priority order, each step under
# `timeout` and within what is left of TOTAL_S; every figure is parsed into summary.txt
# (each goal: the figure, PASS / FAIL / NOT MEASURED and why):
#
#   a  a_fused.txt   fused groups on the GPU (bench/fused.py --device cuda, ml-1m): 4 LightGCN
#                    runs, --fuse 4 vs --fuse off, 2 epochs (goal >= 3x throughput); 8 runs,
#                    --fuse 8, 1 epoch (goal >= 5x); 2 LightGCN + 2 LightGCNOT in one group. Each
#                    member within the GPU path's stated tolerance of its solo run (metrics 1e-3,
#                    loss terms 1e-4 relative: tests/perf/test_fused.py)
#   b  b_ot.txt      LightGCNOT vs LightGCN epoch and peak memory on ml-1m, batch 4096, 3 epochs
#                    (the first not timed; bench/ot_overhead.py): the defaults (GSC's gradient
#                    through the plans), then ot_detach_plan=true (goal <= 1.3x each)
#   c  c_ncl.txt     experiments/ncl_paper.yaml: LightGCN, NCL and SGL side by side on the GPU
#      c_ncl.db      (--per-gpu 3) for the rest of the budget (--timeout: a run not at its early
#                    stop by then is stored `timeout`, with its epochs), then `ablate table
#                    --reference` and each row next to the NCL paper's with its distance (goal:
#                    within 2% in every column)
#   setup.txt        device, versions, the import check, the data's checksum
#   summary.txt      every goal; results.json: every figure
#
# Opt-in phases, run in the order PHASES gives them (e.g. PHASES="graph a b c"), into
# extra.txt: graph (CUDA-graphed steps equal eager, bench/gpu/graph_check.py), ops (kernels
# per step, bench/ot_ops.py), host (RecBole's epoch vs the fast path, bench/epoch_host.py),
# torch and compile (phase b's detached epoch with PyTorch's plans instead of the Triton
# kernels, and with ot_compile=true), pack (4 runs --per-gpu 1 vs 4 vs 4 --mps,
# bench/gpu/sweep.sh; up to 270 s).
#
# On a bare device machine (CUDA torch, no registry), after `bash bench/gpu/setup.sh` here:
#   WHEELS=.whl ABLATE_DATA=.data OUT=$OUT bash bench/gpu/check.sh        # carry .whl and .data
# On the CPU, every phase's code path and the parsing, on ml-100k (about 6 minutes on 2 cores):
#   DEVICE=cpu OUT=/tmp/gpu-check bash bench/gpu/check.sh
#
# Env: PHASES ("a b c"), TOTAL_S (480; 1200 with DEVICE=cpu: seconds from the start of this
# script, the wheels' install included; phase c trains until RESERVE_S=45 s before it),
# A_S and B_S (200 and 110: the limits of phases a and b), DEVICE (cuda | cpu), OUT
# (bench/out), WHEELS, ABLATE_DATA (the folder holding ml-1m/), PYTHON (python3). For phase c
# alone, in a call of its own: PHASES=c TOTAL_S=540.
set -u
cd "$(dirname "$0")/../.."
DEVICE=${DEVICE:-cuda}
PHASES=${PHASES:-a b c}
if [ "$DEVICE" = cpu ]; then
  NEED_DATA=0; TOTAL_S=${TOTAL_S:-1200}; SCALE=3   # step limits x3: the CPU is slower than the budget assumes
else
  NEED_DATA=1; TOTAL_S=${TOTAL_S:-480}; SCALE=1
fi
RESERVE_S=${RESERVE_S:-45}  # after phase c's training: the table, the parsing, the summary
. bench/gpu/env.sh
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ablate-gpu-check.XXXXXX")
: > "$WORK/steps"
echo "== bench/gpu/check.sh: device $DEVICE, phases \"$PHASES\", TOTAL_S=$TOTAL_S, out $OUT, work $WORK"

left() { echo $(( TOTAL_S - ($(date +%s) - START) )); }

# step NAME CAP FILE CMD...: CMD under `timeout` (CAP x SCALE seconds, or less: what is
# left of TOTAL_S less RESERVE_S, and of its phase's PHASE_S x SCALE), its output into FILE
# and on stdout; "NAME RC SECONDS" into WORK/steps. A step with under 20 s left is skipped.
step() {
  local name=$1 cap=$(( $2 * SCALE )) file=$3; shift 3
  local limit=$(( $(left) - RESERVE_S )) phase_left=$(( PHASE_END - $(date +%s) ))
  [ "$limit" -gt "$cap" ] && limit=$cap
  [ "$limit" -gt "$phase_left" ] && limit=$phase_left
  if [ "$limit" -lt 20 ]; then
    echo "== $name: skipped, $(left) s of TOTAL_S=$TOTAL_S left" | tee -a "$file"
    echo "$name skipped 0 $(left) s of TOTAL_S=$TOTAL_S left" >> "$WORK/steps"
    return 0
  fi
  t "$name (at most ${limit} s): $*" | tee -a "$file"
  local t0; t0=$(date +%s)
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$file"
  local rc=${PIPESTATUS[0]}
  echo "$name $rc $(( $(date +%s) - t0 ))" >> "$WORK/steps"
  echo "== $name: exit $rc after $(( $(date +%s) - t0 )) s" | tee -a "$file"
}

finish() {
  "$PY" bench/gpu/results.py summary --work "$WORK" --out "$OUT" || echo "(the summary failed: see above)"
  t "done; summary in $OUT/summary.txt"
}
trap finish EXIT

# ---------------------------------------------------------------------------- set-up
{
  echo "date $(date -Is); device $DEVICE; phases \"$PHASES\"; TOTAL_S=$TOTAL_S; commit $(git rev-parse --short HEAD 2>/dev/null || echo '(no git here)')"
  if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
  fi
  [ -n "$DATA" ] && echo "data: $DATA/ml-1m/ml-1m.inter sha256 $(sha256sum "$DATA/ml-1m/ml-1m.inter" | cut -c1-64)" \
    "(ml-1m README: 8679beef1698adef7b696d6a0afd9b25ad1d65c19e52c520fa2f24206e745d40)"
} > "$WORK/env.txt"
"$PY" - "$DEVICE" >> "$WORK/env.txt" 2> "$WORK/imports.err" <<'PY'
import importlib, platform, sys
need = ["torch", "numpy", "scipy", "pandas", "sklearn", "recbole", "sqlalchemy", "pydantic", "typer", "rich", "yaml",
        "colorlog", "colorama", "texttable", "tabulate", "psutil", "thop", "tensorboard", "torch_geometric", "faiss",
        "jinja2", "matplotlib", "ablate", "models"]
versions, missing = {}, []
for name in need:
    try:
        mod = importlib.import_module(name)
        versions[name] = getattr(mod, "__version__", "ok")
    except Exception as err:  # noqa: BLE001 - every missing package is reported, not only the first
        missing.append(f"{name} ({type(err).__name__}: {err})")
try:
    import torch
    cuda, torch_version = torch.cuda.is_available(), torch.__version__
    name = f" ({torch.cuda.get_device_name(0)})" if cuda else ""
except Exception:  # noqa: BLE001 - already in `missing`
    cuda, torch_version, name = False, "-", ""
print(f"python {platform.python_version()}; torch {torch_version}; cuda available {cuda}{name}; "
      + ", ".join(f"{k} {v}" for k, v in versions.items() if k not in ("torch", "ablate", "models")))
if missing:
    print("MISSING: " + "; ".join(missing))
    sys.exit(3)
if sys.argv[1] == "cuda" and not cuda:
    print("MISSING: CUDA (torch sees no GPU)")
    sys.exit(3)
PY
rc=$?
cat "$WORK/env.txt" "$WORK/imports.err" > "$OUT/setup.txt"
cat "$WORK/env.txt"
if [ $rc != 0 ]; then
  echo "setup $rc $(( $(date +%s) - START )) the import check failed: setup.txt" >> "$WORK/steps"
  echo "FATAL: the import check failed (setup.txt)"
  exit 3
fi
echo "setup 0 $(( $(date +%s) - START ))" >> "$WORK/steps"

if [ "$DEVICE" = cuda ]; then
  SRC=(--device cuda --dataset ml-1m --data-path "$DATA")
  A_EPOCHS=2; B=(--epochs 3); SIDE=(--gpus 0 --per-gpu 3)
else  # ml-100k from the recbole wheel; batches of 16384 keep the CPU epochs short; 3 CPU jobs side by side
  SRC=(--device cpu --dataset ml-100k)
  A_EPOCHS=1; B=(--epochs 1 --batch-size 16384); SIDE=(--cpu --jobs 3)
fi

# ---------------------------------------------------------------------------- the phases
phase_a() {
  local f=$OUT/a_fused.txt
  step a4 110 "$f" "$PY" bench/fused.py "${SRC[@]}" --runs 4 --epochs "$A_EPOCHS" --json "$WORK/a4.json"
  step a8 110 "$f" "$PY" bench/fused.py "${SRC[@]}" --runs 8 --epochs 1 --json "$WORK/a8.json"
  step amix 90 "$f" "$PY" bench/fused.py "${SRC[@]}" --models LightGCN,LightGCNOT --runs 4 --epochs 1 \
    --json "$WORK/amix.json"
}

phase_b() {
  local f=$OUT/b_ot.txt
  step b_gsc 70 "$f" "$PY" bench/ot_overhead.py "${SRC[@]}" "${B[@]}" --json "$WORK/b_gsc.json"
  step b_detached 60 "$f" "$PY" bench/ot_overhead.py "${SRC[@]}" "${B[@]}" -p ot_detach_plan=true \
    --json "$WORK/b_detached.json"
}

phase_c() {
  local f=$OUT/c_ncl.txt db=$WORK/c_ncl.db spec=experiments/ncl_paper.yaml
  if [ "$DEVICE" = cpu ]; then  # the same spec on ml-100k, 2 epochs; NCL's k-means needs >= num_clusters users
    spec=$WORK/ncl_paper.yaml
    "$PY" - "$spec" <<'PY'
import sys, yaml
spec = yaml.safe_load(open("experiments/ncl_paper.yaml"))
spec["base"].update(dataset="ml-100k", epochs=2)
spec["baselines"]["NCL"]["params"]["num_clusters"] = 100
open(sys.argv[1], "w").write(yaml.safe_dump(spec, sort_keys=False))
PY
  fi
  # each run's --timeout counts from its own start, after the workers' imports and data loading
  local budget=$(( $(left) - RESERVE_S )) run_timeout
  run_timeout=$(( budget - 30 * SCALE ))
  if [ "$run_timeout" -lt 60 ]; then
    echo "c_train skipped 0 $(left) s of TOTAL_S=$TOTAL_S left" >> "$WORK/steps"
    echo "== c: skipped, $(left) s left" | tee -a "$f"
    return 0
  fi
  step c_train "$budget" "$f" env ABLATE_DATA="${DATA:-}" "$PY" -m ablate run "$spec" --db "$db" \
    --workdir "$WORK/c_runs" "${SIDE[@]}" --timeout "$run_timeout"
  [ -f "$db" ] || return 0
  { echo; echo "== ablate table ncl_paper --reference experiments/references/ncl_paper.yaml --md"
    timeout 60 "$PY" -m ablate table ncl_paper --db "$db" --reference experiments/references/ncl_paper.yaml --md 2>&1
    echo; echo "== each row next to the paper's (bench/gpu/results.py ncl)"
    timeout 60 "$PY" bench/gpu/results.py ncl --db "$db" --reference experiments/references/ncl_paper.yaml \
      --json "$WORK/c.json" 2>&1
    timeout 30 "$PY" -c "import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))" \
      "$db" "$OUT/c_ncl.db" 2>&1
  } | tee -a "$f"
}

phase_extra() {  # $1: graph | ops | host | torch | compile | pack
  local log=$WORK/extra_$1.log
  case $1 in
    graph) if [ "$DEVICE" = cuda ]; then step graph 90 "$log" "$PY" bench/gpu/graph_check.py
           else echo "graph skipped 0 needs CUDA" >> "$WORK/steps"; fi ;;
    ops) step ops 120 "$log" "$PY" bench/ot_ops.py "${SRC[@]}" -p ot_detach_plan=true ;;
    host) step host 120 "$log" "$PY" bench/epoch_host.py "${SRC[@]}" --epochs 2 ;;
    torch) step torch 90 "$log" "$PY" bench/ot_overhead.py "${SRC[@]}" "${B[@]}" -p ot_detach_plan=true \
             -p ot_solver=torch --json "$WORK/torch.json" ;;
    compile) step compile 150 "$log" "$PY" bench/ot_overhead.py "${SRC[@]}" "${B[@]}" -p ot_detach_plan=true \
               -p ot_compile=true --json "$WORK/compile.json" ;;
    pack) if [ "$DEVICE" = cuda ]; then
            step pack 270 "$log" env EPOCHS=4 SKIP_AUTO=1 MPS_PHASE=1 BUDGET_S=200 ABLATE_DATA="$DATA" \
              OUT="$WORK/pack" bash bench/gpu/sweep.sh
          else step pack 270 "$log" env OUT="$WORK/pack" bash bench/gpu/sweep.sh --cpu-smoke; fi ;;
  esac
  [ -f "$log" ] && { echo "######## $1"; cat "$log"; } >> "$OUT/extra.txt"
  return 0
}

# the limits of phases a and b, so that c keeps at least ~110 s of TOTAL_S=480 if both run long
A_S=${A_S:-200}; B_S=${B_S:-110}
for phase in $PHASES; do
  case $phase in
    a) PHASE_END=$(( $(date +%s) + A_S * SCALE )) ;;
    b) PHASE_END=$(( $(date +%s) + B_S * SCALE )) ;;
    *) PHASE_END=$(( $(date +%s) + TOTAL_S )) ;;
  esac
  case $phase in
    a) t "phase a: fused groups"; phase_a ;;
    b) t "phase b: the OT term's epoch"; phase_b ;;
    c) t "phase c: the NCL paper's rows"; phase_c ;;
    graph|ops|host|torch|compile|pack) t "extra: $phase"; phase_extra "$phase" ;;
    *) echo "unknown phase $phase (a b c graph ops host torch compile pack)"; echo "$phase skipped 0 unknown phase" >> "$WORK/steps" ;;
  esac
done
