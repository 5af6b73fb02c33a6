#!/usr/bin/env bash
# ml-1m LightGCN sweep on one GPU: 4 runs sequential (--per-gpu 1) vs packed (--per-gpu 4),
# then --per-gpu auto (and, with MPS_PHASE=1, --per-gpu 4 --mps: the packed runs under a CUDA
# MPS daemon); wall times, throughput ratio, GPU utilisation sampled by nvidia-smi.
# Fits in 8 minutes on an H100 with the defaults.
#
#   PYTHONPATH=. bash bench/gpu/sweep.sh              # on the GPU machine (recbole installed)
#   bash bench/gpu/sweep.sh --cpu-smoke               # dry run here: ml-100k, 1 epoch, --per-gpu N as --jobs N
#
# Env: ABLATE_DATA (folder holding ml-1m/, default ../shared/data), OUT (default bench/out),
#      EPOCHS (default 8), SKIP_AUTO=1 to skip the --per-gpu auto phase, MPS_PHASE=1 to add
#      the MPS phase, BUDGET_S (default 460), PHASES (labels to run, default
#      "seq packed packed_mps auto"; the switches above still apply), FAST_PATH=false to
#      train with RecBole's own epoch loop (what the fast path changes, side by side).
set -u
cd "$(dirname "$0")/../.."
SMOKE=0
[ "${1:-}" = "--cpu-smoke" ] && SMOKE=1
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
START=$(date +%s)
BUDGET_S=${BUDGET_S:-460}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ablate-gpu-sweep.XXXXXX")
echo "== gpu/sweep.sh: out=$OUT work=$WORK smoke=$SMOKE $(date -Is)"

ablate() { python -c "import sys; from ablate.cli import main; sys.argv[0] = 'ablate'; main()" "$@"; }

echo "== environment"
python - <<'PY' || { echo "FATAL: python environment broken"; exit 2; }
import platform, numpy, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| numpy", numpy.__version__,
      "| cuda available", torch.cuda.is_available())
import recbole, ablate
print("recbole", recbole.__version__, "| ablate from", ablate.__file__)
PY
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=index,name,memory.total,memory.used,utilization.gpu --format=csv
  HAVE_SMI=1
else
  echo "(no nvidia-smi: utilisation not sampled)"; HAVE_SMI=0
fi
echo "cores: $(nproc)"

if [ $SMOKE = 1 ]; then
  DATASET=ml-100k; EPOCHS=${EPOCHS:-1}; DATA=""
  DEV=(--cpu)   # no GPU here: each phase's --per-gpu N becomes --jobs N (see phase)
else
  DATASET=ml-1m; EPOCHS=${EPOCHS:-8}
  DATA=$(cd "${ABLATE_DATA:-../shared/data}" 2>/dev/null && pwd) || { echo "FATAL: no data folder ${ABLATE_DATA:-../shared/data}"; exit 2; }
  [ -f "$DATA/ml-1m/ml-1m.inter" ] || { echo "FATAL: $DATA/ml-1m/ml-1m.inter missing"; exit 2; }
  DEV=()
fi

python - "$WORK" "$DATASET" "$EPOCHS" "$DATA" "${FAST_PATH:-true}" <<'PY' || { echo "FATAL: cannot write the spec"; exit 2; }
import sys
from pathlib import Path
from tests.oracles import recbole_runs as c
work, dataset, epochs, data = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] or None
spec = c.write_spec(work, name="gpu-sweep", dataset=dataset, data_path=data, epochs=epochs,
                    grid={"n_layers": [2, 3], "learning_rate": [0.001, 0.002]},
                    extra={"embedding_size": 64, "topk": [10, 20], "eval_batch_size": 4096000,
                           "fast_path": sys.argv[5] != "false"})
print(spec.read_text())
PY
SPEC=$WORK/spec.yaml

sample_start() {  # $1: csv file
  [ $HAVE_SMI = 1 ] || return 0
  nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 > "$1" 2>/dev/null &
  SMI_PID=$!
}
sample_stop() {  # $1: csv file, $2: label
  [ $HAVE_SMI = 1 ] || return 0
  kill "$SMI_PID" 2>/dev/null; wait "$SMI_PID" 2>/dev/null
  python - "$1" "$2" <<'PY'
import sys
rows = [l.split(",") for l in open(sys.argv[1]) if l.count(",") >= 3]
util = [float(r[2]) for r in rows if r[2].strip().replace(".", "").isdigit()]
mem = [float(r[3]) for r in rows if r[3].strip().replace(".", "").isdigit()]
if util:
    busy = sum(u > 0 for u in util) / len(util)
    print(f"   {sys.argv[2]}: GPU util mean {sum(util)/len(util):.0f}% max {max(util):.0f}% busy {100*busy:.0f}% of "
          f"{len(util)} samples; memory used max {max(mem):.0f} MiB")
PY
}

phase() {  # $1: label, rest: ablate run options
  local label=$1; shift
  case " ${PHASES:-seq packed packed_mps auto} " in *" $label "*) ;; *) return 0 ;; esac
  local elapsed=$(( $(date +%s) - START ))
  if [ $elapsed -gt $BUDGET_S ]; then echo "== $label: SKIPPED (budget: ${elapsed}s used)"; return 1; fi
  if [ $SMOKE = 1 ]; then  # shellcheck disable=SC2046
    set -- $(echo "$*" | sed -e 's/--per-gpu auto//' -e 's/--per-gpu/--jobs/')
  fi
  echo "== $label: ablate run ${DEV[*]} $* (t=${elapsed}s)"
  local db="$WORK/$label.db"
  sample_start "$OUT/util_$label.csv"
  local t0=$(date +%s.%N)
  ablate run "$SPEC" --db "$db" --workdir "$WORK/wd_$label" "${DEV[@]}" "$@" 2>&1 | sed -u "s/^/   [$label] /"
  local rc=${PIPESTATUS[0]}
  local t1=$(date +%s.%N)
  sample_stop "$OUT/util_$label.csv" "$label"
  local wall; wall=$(python -c "print(f'{$t1 - $t0:.1f}')")
  echo "   $label: exit $rc, wall $wall s"
  echo "$label $wall $rc" >> "$WORK/walls"
  python - "$db" "$label" <<'PY'
import sys
from ablate.store import Store
for r in Store(sys.argv[1], create=False).runs():
    st = getattr(r.status, "value", r.status)
    m = {f"{x.split[0]}.{x.name}": round(x.value, 5) for x in r.metrics if x.split == "test"}
    ep = [round(e.train_seconds, 2) for e in r.epochs if e.train_seconds is not None]
    print(f"   [{sys.argv[2]}] run {r.id} {r.name}: {st} wall {r.wall_seconds or 0:.1f}s device {r.device} "
          f"peak {r.peak_mem_mb or 0:.0f} MiB epochs(s) {ep} {m} {r.error or ''}")
    if st != "done" and r.log_path:  # why it failed is in its log: the last lines come back with the output
        try:
            tail = open(r.log_path, errors="replace").read().splitlines()[-25:]
        except OSError:
            tail = ["(no log)"]
        print("\n".join(f"      | {line[:300]}" for line in tail))
PY
  return 0
}

phase seq --per-gpu 1
phase packed --per-gpu 4
[ "${MPS_PHASE:-0}" = 1 ] && [ $SMOKE = 0 ] && phase packed_mps --per-gpu 4 --mps
[ "${SKIP_AUTO:-0}" = 1 ] || phase auto --per-gpu auto

echo "== summary"
python - "$WORK" "$OUT" <<'PY'
import json, sys
from pathlib import Path
from ablate.store import Store
work, out = Path(sys.argv[1]), Path(sys.argv[2])
walls = {l.split()[0]: (float(l.split()[1]), int(l.split()[2])) for l in (work / "walls").read_text().splitlines()}
res = {"walls_s": walls}
def metrics(label):
    return {r.key: {(x.split, x.name): x.full for x in r.metrics} for r in Store(str(work / f"{label}.db"), create=False).runs()}  # unrounded where kept
if "seq" in walls:
    seq = walls["seq"][0]
    for label, (wall, rc) in walls.items():
        if label == "seq":
            continue
        ratio = seq / wall
        res[f"throughput_{label}_vs_seq"] = ratio
        a, b = metrics("seq"), metrics(label)
        diffs = [abs(a[k][m] - b[k][m]) for k in a if k in b for m in a[k] if m in b[k]]
        worst = max(diffs) if diffs else float("nan")
        res[f"max_metric_diff_{label}"] = worst
        print(f"{label:7s}: {wall:6.1f} s vs seq {seq:6.1f} s -> throughput x{ratio:.2f} (target >= 2.5 for packed); "
              f"exit {rc}; max |metric diff| vs seq {worst:.2e}")
(out / "gpu_sweep.json").write_text(json.dumps(res, indent=2))
print("written", out / "gpu_sweep.json")
PY
echo "== done in $(( $(date +%s) - START )) s"
