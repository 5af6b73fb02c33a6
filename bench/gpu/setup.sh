#!/usr/bin/env bash
# Prepares here, where pip reaches a registry, what bench/gpu/check.sh needs on a device
# machine that reaches none, in two git-ignored folders of this checkout:
#
#   .whl/          the Python packages the device image lacks, at the versions installed here,
#                  as wheels for the device's Python (PY_VERSION, default 3.12, x86-64 Linux)
#   .data/ml-1m/   the NCL paper's ml-1m (ratings >= 3, no rating column), from $ABLATE_DATA
#
#   bash bench/gpu/setup.sh
#   # then, on the device, carrying .whl and .data:
#   WHEELS=.whl ABLATE_DATA=.data OUT=$OUT bash bench/gpu/check.sh
#
# The image has CUDA torch, numpy, scipy, pandas, scikit-learn, typer, rich, pyyaml, tqdm,
# tabulate, psutil, tensorboard, torch-geometric, matplotlib, jinja2 and colorama; it lacks
# RecBole and these of ablate's and RecBole's runtime needs: SQLAlchemy, pydantic (and
# pydantic-core, annotated-types, typing-inspection; typing-extensions at pydantic's minimum),
# colorlog, texttable, thop, faiss-cpu (NCL's k-means) and submitit. check.sh's import check
# names anything still missing. The wheels install there with pip --no-index --no-deps into
# /tmp/ablate-site, first on PYTHONPATH. This script checks that they install for that
# Python and platform, and that what travels (tracked and untracked files, .whl, .data) stays
# under the 64 MiB a device call carries.
set -eu
cd "$(dirname "$0")/../.."
PY_VERSION=${PY_VERSION:-3.12}
NAMES="recbole sqlalchemy pydantic pydantic-core annotated-types typing-inspection typing-extensions colorlog
texttable thop faiss-cpu submitit"
pins=$(python - $NAMES <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
pins = []
for name in sys.argv[1:]:
    try:
        pins.append(f"{name}=={version(name)}")
    except PackageNotFoundError:
        sys.exit(f"{name} is not installed here: install it (pip install -e '.[test]' and recbole) and run this again")
print(" ".join(pins))
PY
)
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
--platform manylinux2014_x86_64 --platform manylinux1_x86_64"
echo "wheels for Python $PY_VERSION: $pins"
rm -rf .whl && mkdir -p .whl   # one version of each: two of one package stop the install there
# shellcheck disable=SC2086
python -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
  $PLATFORMS -d .whl $pins
check=$(mktemp -d)
# shellcheck disable=SC2086
python -m pip install -q --no-index --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
  $PLATFORMS --target "$check" .whl/*.whl
echo "they install for Python $PY_VERSION: $(ls "$check" | grep -c 'dist-info$') packages"
rm -rf "$check"

SRC=${ABLATE_DATA:-../shared/data}
[ -f "$SRC/ml-1m/ml-1m.inter" ] || { echo "no $SRC/ml-1m/ml-1m.inter: set ABLATE_DATA to the folder holding ml-1m/"; exit 2; }
rm -rf .data && mkdir -p .data/ml-1m
cp "$SRC/ml-1m/ml-1m.inter" .data/ml-1m/
[ -f "$SRC/ml-1m/README.md" ] && cp "$SRC/ml-1m/README.md" .data/ml-1m/
sum=$(sha256sum .data/ml-1m/ml-1m.inter | cut -c1-64)
if [ -f .data/ml-1m/README.md ] && ! grep -q "$sum" .data/ml-1m/README.md; then
  echo "WARNING: .data/ml-1m/ml-1m.inter sha256 $sum is not the one its README gives"
fi
echo "data: .data/ml-1m/ml-1m.inter sha256 $sum"

for d in .whl .data; do git check-ignore -q "$d" || { echo "FATAL: $d is not git-ignored here"; exit 2; }; done
python - <<'PY'
import os, subprocess
files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], capture_output=True,
                       check=True).stdout.decode().split("\0")
tree = sum(os.path.getsize(f) for f in files if f and os.path.isfile(f))
carried = sum(os.path.getsize(os.path.join(d, f)) for top in (".whl", ".data") for d, _, fs in os.walk(top) for f in fs)
mib = (tree + carried) / 2**20
print(f"what travels: working tree {tree / 2**20:.1f} MiB + .whl and .data {carried / 2**20:.1f} MiB = {mib:.1f} MiB (limit 64)")
if mib > 60:
    raise SystemExit("FATAL: too large for one device call")
PY
