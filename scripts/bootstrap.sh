# Sourced by the other scripts: what a fresh Linux machine needs for one of them, done once.
#   source scripts/bootstrap.sh demo   strace, and ip and unshare for the demo's private
#                                      network namespace; .venv with netaudit and pytest
#   source scripts/bootstrap.sh test   everything for the tests and the benchmarks: also gcc
#                                      and netaudit's test extras (ruff, mypy, hypothesis, ...)
# apt-get installs what is missing; .venv is created and filled. Safe to run again: each step
# is skipped when already done, and the demo reuses what the tests installed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
needs=${1:-test}

# strace for netaudit itself; ip and unshare for the private network namespace (the demo's,
# the tests'); gcc for the tests that build small C programs which try to escape the trace.
tools="strace:strace ip:iproute2 unshare:util-linux"
[ "$needs" = demo ] || tools="$tools gcc:gcc"
missing=""
for pair in $tools; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] \
        || missing="$missing ${pair#*:}"
done
case "$missing" in *gcc*) missing="$missing libc6-dev" ;; esac
if [ -n "$missing" ]; then
    echo "bootstrap: installing$missing with apt-get" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

python=${PYTHON:-python3}
if command -v pyenv >/dev/null 2>&1; then
    # pyenv's shim forks a few dozen processes per start; use the real interpreter.
    python=$(pyenv which "$python" 2>/dev/null || command -v "$python")
fi
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv with $python" >&2
    "$python" -m venv .venv
fi
# One stamp per set; the test set includes the demo's. A changed pyproject.toml installs again.
fresh() { [ -f ".venv/.netaudit-$1" ] && [ ! pyproject.toml -nt ".venv/.netaudit-$1" ]; }
if ! fresh test && { [ "$needs" != demo ] || ! fresh demo; }; then
    if [ "$needs" = demo ]; then
        echo "bootstrap: installing netaudit and pytest into .venv" >&2
        wanted=(-e . "pytest>=8")
    else
        echo "bootstrap: installing netaudit and its test extras into .venv" >&2
        wanted=(-e ".[test]")
    fi
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q "${wanted[@]}"
    touch ".venv/.netaudit-$needs"
fi
export PATH="$root/.venv/bin:$PATH"
