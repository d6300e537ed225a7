#!/usr/bin/env bash
# Does the pinned install resolve, from wheels alone, on the oldest and the newest Python the project supports?
#
#   scripts/check_install.sh                # Python 3.10 and 3.13 (requires-python's floor, the newest supported)
#   scripts/check_install.sh 3.11 3.12      # other versions
#
# For each version: pip install --dry-run of '.[EXTRAS]' with -c constraints.txt for that Python version, wheels
# only (nothing is installed; pip fetches the wheels whose metadata it reads, from its cache after the first run),
# then the versions it would install. Needs only the package index. Exit status 1, with pip's own explanation of
# the conflict above it, when any version does not resolve. 50-110 s per version on the 2-core machine.
#
# pip evaluates the environment markers of a -c file (numpy==X; python_version < "3.11") for the interpreter that
# runs pip, not for --python-version (pip 23.2 and 26.3 alike), so each version gets a copy of constraints.txt with
# its markers evaluated for that version. --target: pip before 24 takes --python-version only with it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-torch,data,symbolic,lightning,tensorboard,test}
CONSTRAINTS=${CONSTRAINTS:-constraints.txt}
VERSIONS=("$@")
[ ${#VERSIONS[@]} -gt 0 ] || VERSIONS=(3.10 3.13)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# constraints.txt with every marker evaluated for Python $1: the lines that apply, without their markers
constraints_for() {
    "$PYTHON" - "$1" "$CONSTRAINTS" <<'PY'
import sys
try:
    from packaging.requirements import Requirement
except ImportError:                      # a bare interpreter: pip's own copy of packaging
    from pip._vendor.packaging.requirements import Requirement
version, path = sys.argv[1], sys.argv[2]
env = {"python_version": version, "python_full_version": f"{version}.0"}
for line in open(path, encoding="utf-8"):
    text = line.split(" #", 1)[0].strip()
    if not text or text.startswith("#"):
        continue
    req = Requirement(text)
    if req.marker is None or req.marker.evaluate(env):
        req.marker = None
        print(req)
PY
}

# "name version" of the constrained packages in pip's --report, one line
summary() {
    "$PYTHON" - "$1" "$2" <<'PY'
import json, re, sys
report, constraints = sys.argv[1], sys.argv[2]
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
pinned = [norm(re.split(r"[=<>!~; ]", l, maxsplit=1)[0]) for l in open(constraints) if l.strip()]
got = {norm(i["metadata"]["name"]): i["metadata"]["version"] for i in json.load(open(report))["install"]}
print(", ".join(f"{n} {got[n]}" for n in pinned if n in got))
PY
}

# One version: "OK ..." or pip's explanation then "FAILED ..." in $TMP/out-$v; exit status 1 when it fails
check() {
    local v=$1 start=$SECONDS
    constraints_for "$v" > "$TMP/constraints-$v.txt"
    if "$PYTHON" -m pip install --dry-run --disable-pip-version-check --ignore-installed \
            --target "$TMP/target-$v" --only-binary=:all: --python-version "$v" \
            -c "$TMP/constraints-$v.txt" --report "$TMP/report-$v.json" ".[$EXTRAS]" > "$TMP/pip-$v.log" 2>&1; then
        echo "check_install: Python $v: '.[$EXTRAS]' with $CONSTRAINTS resolves ($((SECONDS - start)) s):" \
             "$(summary "$TMP/report-$v.json" "$TMP/constraints-$v.txt")"
    else
        grep -v "^WARNING: Location 'file:" "$TMP/pip-$v.log" | tail -n 25 || true   # the conflict and its causes
        echo "check_install: FAILED: Python $v: '.[$EXTRAS]' with $CONSTRAINTS does not resolve from wheels" \
             "(pip's output above)"
        return 1
    fi
}

# The versions in parallel (one pip per core), reported in the order given
pids=()
for v in "${VERSIONS[@]}"; do
    check "$v" > "$TMP/out-$v" 2>&1 &
    pids+=($!)
done
status=0
for i in "${!VERSIONS[@]}"; do
    if wait "${pids[$i]}"; then
        cat "$TMP/out-${VERSIONS[$i]}"
    else
        cat "$TMP/out-${VERSIONS[$i]}" >&2
        status=1
    fi
done
exit $status
