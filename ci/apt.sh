# Sourced by ci/browser.sh and ci/latex.sh: `apt_install WHAT PACKAGE...` installs Debian
# packages (needs root and apt-get), bounded in time, and says how long it took;
# APT_FLAGS adds apt-get options (--no-install-recommends: TeX Live without its documents).
apt_install() {
    local what=$1
    shift
    if ! command -v apt-get >/dev/null; then
        echo "ci: no $what and no apt-get to install it" >&2
        exit 1
    fi
    local start
    start=$(date +%s)
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq
    timeout 900 apt-get install -y -qq ${APT_FLAGS:-} "$@" >/dev/null
    echo "ci: installed $what in $(( $(date +%s) - start )) s"
}
