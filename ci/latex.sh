#!/usr/bin/env bash
# pdflatex with booktabs for the test that compiles `ablate table --latex`'s output
# (tests/report/test_significance_table.py; under CI=true it fails without them).
#
#   ci/latex.sh    install Debian's texlive-latex-base and texlive-latex-recommended
#                  (booktabs) when pdflatex is missing, then print its version
#
# Needs root and apt-get. Measured on a 2-core Debian 12 machine: 67 s with downloads.
set -euo pipefail

if ! command -v pdflatex >/dev/null || ! kpsewhich booktabs.sty >/dev/null 2>&1; then
    . "$(dirname "$0")/apt.sh"
    APT_FLAGS=--no-install-recommends apt_install "pdflatex and booktabs" texlive-latex-base texlive-latex-recommended
fi
pdflatex --version | head -1
