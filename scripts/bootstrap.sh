# Sourced by the other scripts: everything a fresh Linux machine needs, done once.
# Installs strace with apt-get when it is missing, creates .venv, installs netaudit with its
# test extras. Safe to run again: each step is skipped when already done.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# strace for netaudit itself; ip and unshare for the tests' private network namespace; gcc
# for the tests that build small C programs which try to escape the trace.
missing=""
for pair in strace:strace ip:iproute2 unshare:util-linux gcc:gcc; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] \
        || missing="$missing ${pair#*:}"
done
if [ -n "$missing" ]; then
    echo "bootstrap: installing$missing with apt-get" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing libc6-dev >/dev/null
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
stamp=.venv/.netaudit-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "bootstrap: installing netaudit and its test extras into .venv" >&2
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
