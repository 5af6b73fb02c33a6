# Sourced by bench/gpu/check.sh (from the repository root):
# OUT as an absolute folder, START for timestamps, the carried wheels on PYTHONPATH (WHEELS,
# on a bare device machine), DATA the folder holding ml-1m/, and t LABEL to print a phase
# header with the seconds since START.
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
START=$(date +%s)
if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ablate-site "$WHEELS"/*.whl \
    || { echo "FATAL: cannot install the wheels in $WHEELS"; exit 2; }
  export PYTHONPATH=/tmp/ablate-site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
DATA=$(cd "${ABLATE_DATA:-../shared/data}" && pwd) || { echo "FATAL: no data folder"; exit 2; }
t() { echo "== $1 (t=$(( $(date +%s) - START ))s)"; }
