# Sourced by the scripts: makes `uv` available and keeps it on the machine's own Python.
# On a fresh machine with only Python >= 3.11 and pip, uv is installed into .tools/uv
# (pip --target needs no virtualenv and no system-wide install).

export UV_PYTHON_DOWNLOADS=never
export UV_PYTHON_PREFERENCE=only-system

ensure_uv() {
    if command -v uv >/dev/null 2>&1; then
        UV=(uv)
        return
    fi
    local root tools python
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    tools="$root/.tools/uv"
    python="${PYTHON:-python3}"
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "error: Python >= 3.11 is required (tried '$python'; set PYTHON=/path/to/python3.11)" >&2
        exit 1
    fi
    if [ ! -x "$tools/bin/uv" ]; then
        echo "installing uv into $tools ..." >&2
        "$python" -m pip install --quiet --disable-pip-version-check --target "$tools" "uv>=0.9,<1" >&2
    fi
    export PYTHONPATH="$tools${PYTHONPATH:+:$PYTHONPATH}"
    UV=("$tools/bin/uv")
}

# Compiles the workspace's own sources to bytecode. Every process the system starts (API,
# dispatcher, workers, the tests' subprocesses) would otherwise compile them again: where
# PYTHONDONTWRITEBYTECODE is set no .pyc is ever cached, and an import of the dispatcher cost
# ~4 s of CPU instead of ~1.4 s. Installed dependencies are compiled by `uv sync --compile-bytecode`.
compile_sources() {
    "${UV[@]}" run --frozen --no-sync python -m compileall -q -j 0 packages "$@" >/dev/null
}
