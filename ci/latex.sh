#!/usr/bin/env bash
# pdflatex with booktabs for the test that compiles `ablate table --latex`'s output
# (tests/report/test_latex_compiles.py; under CI=true it fails without them).
#
#   ci/latex.sh    install Debian's texlive-latex-base and texlive-latex-recommended
#                  (booktabs) when pdflatex is missing, then print its version
#
# Needs root and apt-get.
set -euo pipefail

if command -v pdflatex >/dev/null && kpsewhich booktabs.sty >/dev/null 2>&1; then
    :
else
    if ! command -v apt-get >/dev/null; then
        echo "ci/latex.sh: no pdflatex and no apt-get to install it" >&2
        exit 1
    fi
    start=$(date +%s)
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq
    timeout 900 apt-get install -y -qq --no-install-recommends texlive-latex-base texlive-latex-recommended >/dev/null
    echo "ci/latex.sh: installed pdflatex and booktabs in $(( $(date +%s) - start )) s"
fi
pdflatex --version | head -1
