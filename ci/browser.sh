#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the test that opens `ablate report`'s page in a
# real browser (tests/report/test_html_report.py; under CI=true it fails without them).
#
#   ci/browser.sh    install Debian's chromium and chromium-driver when missing, then
#                    print their versions
#
# Needs root and apt-get. Measured on a 2-core Debian 12 machine: apt-get update and the
# install about 31 s with downloads (15 s from apt's cache); nothing to do afterwards.
set -euo pipefail

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    . "$(dirname "$0")/apt.sh"
    apt_install "chromium and chromium-driver" chromium chromium-driver
fi
chromium --version
chromedriver --version
