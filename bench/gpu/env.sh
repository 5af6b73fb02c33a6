# Sourced by bench/gpu/check.sh from the repository root. Sets OUT (absolute), START (for
# the budget and the timestamps), PY, PYTHONPATH (this checkout, and first the wheels in
# $WHEELS, installed with pip --no-index into /tmp/ablate-site on a machine that reaches no
# registry), DATA (the folder holding ml-1m/, from $ABLATE_DATA; only when NEED_DATA=1),
# and t LABEL, which prints a phase header with the seconds since START.
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
START=$(date +%s)
PY=${PYTHON:-python3}
if [ -n "${WHEELS:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ablate-site "$WHEELS"/*.whl \
    || { echo "FATAL: cannot install the wheels in $WHEELS"; exit 2; }
  export PYTHONPATH=/tmp/ablate-site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
export PYTHONWARNINGS=ignore  # RecBole's and torch's deprecation warnings would bury the figures
DATA=""
if [ "${NEED_DATA:-1}" = 1 ]; then
  DATA=$(cd "${ABLATE_DATA:-../shared/data}" 2>/dev/null && pwd) \
    || { echo "FATAL: no data folder ${ABLATE_DATA:-../shared/data} (set ABLATE_DATA to the folder holding ml-1m/)"; exit 2; }
  [ -f "$DATA/ml-1m/ml-1m.inter" ] || { echo "FATAL: $DATA/ml-1m/ml-1m.inter missing"; exit 2; }
fi
t() { echo "== $1 (t=$(( $(date +%s) - START ))s)"; }
