#!/usr/bin/env bash
# Fetch, on this machine, the wheels the lent GPU machine lacks (it has CUDA torch and
# Python 3.12 but no RecBole and friends, and cannot reach PyPI), at the versions
# installed here, into .whl/ (git-ignored; carry it with the device call), and copy
# ml-1m into .data/:
#
#   bash bench/gpu/setup.sh && echo /.whl/ >> .git/info/exclude && echo /.data/ >> .git/info/exclude
#   # then, on the device:  WHEELS=.whl ABLATE_DATA=.data OUT=$OUT bash bench/gpu/check.sh
set -eu
cd "$(dirname "$0")/../.."
PY=${PY_VERSION:-3.12}
pkgs=$(python - <<'PY'
from importlib.metadata import PackageNotFoundError, version
names = ["recbole", "sqlalchemy", "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "colorlog",
         "texttable", "submitit", "thop", "torch_geometric", "xxhash", "psutil"]
pins = []
for n in names:
    try:
        pins.append(f"{n}=={version(n)}")
    except PackageNotFoundError:  # optional here (thop): the device goes without it too
        pass
print(" ".join(pins))
PY
)
echo "fetching for Python $PY: $pkgs"
# shellcheck disable=SC2086
pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d .whl $pkgs
mkdir -p .data
cp -r "${ABLATE_DATA:-../shared/data}/ml-1m" .data/
ls .whl .data
