#!/usr/bin/env bash
# First-contact jobs of `make test` (issue 13): the runtime and the server as a user installs them.
#   1. fixtures: build_references.py in the full environment (.venv: torch, onnx) -> $OUT/data
#   2. runtime: a fresh venv with `pip install .` (+ pytest) runs test_installed_env/_runtime.py
#   3. server:  a fresh venv with `pip install '.[server]'` (+ pytest) runs test_installed_env/_server.py
#   4. openvino: a fresh venv with `pip install '.[openvino]'` (+ pytest) runs test_installed_env/_openvino.py
#   5. floor: a fresh venv of the lowest Python declared, with `pip install '.[server]'` at the lowest versions
#      pyproject.toml declares (floors.py: `numpy>=1.24` -> numpy 1.24.x), runs test_installed_env/_runtime/_server.py
#   6. latest: a fresh venv of the newest Python at hand, with `pip install '.[server]'` unpinned (the newest
#      releases a user gets today), runs the same tests as the floor
# `.` is a copy of the checkout's tracked and untracked-but-not-ignored files, as a fresh clone would have
# them: no build/ or *.egg-info left by earlier builds (setuptools reuses an old SOURCES.txt, which once
# shipped files that pyproject.toml no longer declared). Versions are pinned to the development venv's
# (pip freeze as constraints: they cap versions and install nothing), so both sides run the same
# onnxruntime. Each job's time goes to $OUT/timings.txt, the runtime venv's import time and size to
# $OUT/install-measurements.json.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=$(realpath -s "${PY:-.venv/bin/python}")  # -s: a venv's python is a symlink to keep
PYTHON=${PYTHON:-python3}
OUT=$(realpath -ms "${FIRST_CONTACT_BUILD:-build/first-contact}")

mkdir -p "$OUT"
: > "$OUT/timings.txt"

timed() {  # timed NAME COMMAND...: run it, then log its wall time
    local name=$1 start end
    shift
    start=$(date +%s.%N)
    "$@"
    end=$(date +%s.%N)
    awk -v n="$name" -v s="$start" -v e="$end" 'BEGIN { printf "first-contact %-14s %6.1f s\n", n, e - s }' \
        | tee -a "$OUT/timings.txt"
}

copy_source() {  # the checkout as a fresh clone has it, into $OUT/src
    rm -rf "$OUT/src"
    mkdir -p "$OUT/src"
    git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        | xargs -0 cp --parents -t "$OUT/src"
}

make_venv() {  # make_venv KIND REQUIREMENT [CONSTRAINTS [PYTHON]]: a fresh venv holding REQUIREMENT (of $OUT/src), pytest
    local venv="$OUT/venv-$1" log="$OUT/pip-$1.log" constraints=${3:-$OUT/constraints.txt} python=${4:-$PYTHON}
    rm -rf "$venv"
    # No pip of its own (ensurepip costs ~20 s here): the development venv's pip installs into it (--python).
    # --no-compile: writing .pyc for all of numpy and onnxruntime took ~40 s of a loaded run; imports write them.
    # --only-binary: wheels as users get them (an old floor must not be built from its sdist here instead).
    "$python" -m venv --without-pip "$venv"
    (cd "$OUT/src" && "$PY" -m pip --python "$venv/bin/python" install --no-compile --disable-pip-version-check \
        --only-binary=:all: -c "$constraints" "$2" pytest) > "$log" 2>&1 \
        || { cat "$log"; echo "first-contact: pip install $2 failed ($log)" >&2; return 1; }
}

run_tests() {  # run_tests KIND TEST_FILE...: pytest of the clean venv against the prebuilt fixtures
    local kind=$1
    shift
    env -u PYTHONPATH -u PYTHONDONTWRITEBYTECODE COLBERT_ONNX_INSTALL="$kind" COLBERT_ONNX_FIRST_CONTACT="$OUT/data" \
        "$OUT/venv-$kind/bin/pytest" -q -p no:cacheprovider "$@" \
        || { echo "first-contact: FAILED in the clean $kind venv ($OUT/venv-$kind): see above" >&2; return 1; }
}

timed fixtures nice -n 5 "$PY" first_contact/build_references.py --out "$OUT/data"
"$PY" -m pip freeze --exclude-editable --disable-pip-version-check > "$OUT/constraints.txt"
copy_source

timed runtime-venv make_venv runtime .
timed runtime-tests run_tests runtime first_contact/test_installed_env.py first_contact/test_installed_runtime.py
"$OUT/venv-runtime/bin/python" first_contact/measure_install.py > "$OUT/install-measurements.json"

timed server-venv make_venv server ".[server]"
timed server-tests run_tests server first_contact/test_installed_env.py first_contact/test_installed_server.py

# The floors: the same tests at the lowest versions declared (the references come from the development venv's
# onnxruntime: a floor whose kernels round differently enough to miss their tolerances is raised, docs/install.md).
# The runtime venv's check that `serve` names the missing [server] extra does not apply where it is installed.
# Its interpreter is the lowest Python declared (Requires-Python) where one is on PATH: a Python nobody ran is no
# claim either (>=3.10 once stood there, where no onnxruntime the floors admit has a wheel).
"$PY" first_contact/floors.py server > "$OUT/floors.txt"
FLOOR_PYTHON_VERSION=$("$PY" first_contact/floors.py --python)
FLOOR_PYTHON=$(command -v "python$FLOOR_PYTHON_VERSION" || true)
if [ -z "$FLOOR_PYTHON" ]; then
    FLOOR_PYTHON=$PYTHON
    echo "first-contact floor: python$FLOOR_PYTHON_VERSION (the declared lowest Python) is not on PATH; the floor" \
        "job runs on $("$PYTHON" -c 'import platform; print(platform.python_version())') instead" \
        | tee -a "$OUT/timings.txt"
fi
timed floor-venv make_venv floor ".[server]" "$OUT/floors.txt" "$FLOOR_PYTHON"
{ "$OUT/venv-floor/bin/python" -c 'import platform; print("# Python", platform.python_version())'
  "$PY" -m pip --python "$OUT/venv-floor/bin/python" list --format=freeze --disable-pip-version-check 2>/dev/null
} > "$OUT/floor-versions.txt"
timed floor-tests run_tests floor first_contact/test_installed_env.py first_contact/test_installed_runtime.py \
    first_contact/test_installed_server.py \
    --deselect first_contact/test_installed_runtime.py::test_cli_serve_explains_that_it_needs_the_server_extra

# The newest releases: what `pip install colbert-onnx` gives a user today. Every job above is pinned (to the
# development venv's versions, or to the floors), and the development venv is capped by its own extras (nncf holds
# numpy below 2.5), so a numpy, onnxruntime, tokenizers, fastapi, uvicorn or pydantic release that breaks the package
# would reach users unseen. '.[server]' with no constraint, on the newest CPython 3.N at hand (PATH's python3.N that
# runs, else pyenv's installs; numpy 2.5 has no Python 3.11 wheel). Its versions go to latest-versions.txt.
newest_python() {
    local n candidate
    for ((n = 30; n >= ${FLOOR_PYTHON_VERSION#3.}; n--)); do
        for candidate in "python3.$n" $(command -v pyenv > /dev/null \
                && find "$(pyenv root)/versions" -maxdepth 3 -path "*/versions/3.$n.[0-9]*/bin/python3.$n" 2> /dev/null \
                | sort -V | tail -n 1); do
            if "$candidate" -c "" 2> /dev/null; then command -v "$candidate"; return; fi
        done
    done
    echo "$PYTHON"
}
LATEST_PYTHON=$(newest_python)
: > "$OUT/no-constraints.txt"
timed latest-venv make_venv latest ".[server]" "$OUT/no-constraints.txt" "$LATEST_PYTHON"
{ "$OUT/venv-latest/bin/python" -c 'import platform; print("# Python", platform.python_version())'
  "$PY" -m pip --python "$OUT/venv-latest/bin/python" list --format=freeze --disable-pip-version-check 2>/dev/null
} > "$OUT/latest-versions.txt"
echo "first-contact latest: $(head -n 1 "$OUT/latest-versions.txt" | cut -c3-)," \
    "$(grep -i -E '^(numpy|onnxruntime|tokenizers)==' "$OUT/latest-versions.txt" | paste -sd ' ')" \
    | tee -a "$OUT/timings.txt"
timed latest-tests run_tests latest first_contact/test_installed_env.py first_contact/test_installed_runtime.py \
    first_contact/test_installed_server.py \
    --deselect first_contact/test_installed_runtime.py::test_cli_serve_explains_that_it_needs_the_server_extra

# The openvino job needs fixtures with OpenVINO graphs: the development venv (make setup) has openvino, so they have
# them; exported where openvino could not be imported, the job is not run, and this says so.
if "$PY" -c "import json, sys; sys.exit(not json.load(open(sys.argv[1])).get('engine_graphs'))" \
        "$OUT/data/toy-onnx/manifest.json"; then
    timed openvino-venv make_venv openvino ".[openvino]"
    timed openvino-tests run_tests openvino first_contact/test_installed_env.py first_contact/test_installed_openvino.py
else
    echo "first-contact openvino: NOT RUN: the fixtures were exported where openvino could not be imported, so they" \
        "hold no OpenVINO graph (manifest engine_graphs_not_written)" | tee -a "$OUT/timings.txt"
fi
