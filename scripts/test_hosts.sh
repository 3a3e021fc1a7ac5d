#!/usr/bin/env bash
# The host matrix: run the e2e suite against each ComfyUI folder given, one after the other, and print a
# table of what passed (docs/compatibility.md keeps the figures).
#
# Usage: scripts/test_hosts.sh COMFY_DIR[=PYTHON] ...   (PYTHON runs that host; default: this venv's)
#        With no argument: the CI host (.venv/comfyui, 0.3.75).
# Env:   PYTEST_ARGS (extra pytest arguments as shell words, e.g. '-k "security or host"'), TAV_E2E (test
#        path, default tests/e2e).
# Each host needs this pack linked into its custom_nodes/ (scripts/setup_comfy_host.sh for 0.3.75,
# scripts/setup_comfy_host_033.sh for git-mirror hosts such as 0.33.0 and 0.3.64). The test process
# itself never imports the host's packages: in-process checks run in subprocesses of the host's Python.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
[ $# -gt 0 ] || set -- "$ROOT/.venv/comfyui"
LOGS="$(mktemp -d)"
status=0
rows=()
for spec in "$@"; do
  dir="${spec%%=*}"
  host_py="$PY"
  [ "$spec" != "$dir" ] && host_py="${spec#*=}"
  version="$("$host_py" -c "import sys; sys.path.insert(0, '$dir'); import comfyui_version; print(comfyui_version.__version__)" 2>/dev/null || echo "?")"
  log="$LOGS/$(basename "$dir").log"
  echo "== ComfyUI $version at $dir (python $host_py)"
  start=$(date +%s)
  eval "extra=(${PYTEST_ARGS:-})"  # shell words, quotes kept: PYTEST_ARGS='-k "a or b"'
  HF_HUB_OFFLINE=1 TAV_COMFY_DIR="$dir" TAV_COMFY_PYTHON="$host_py" \
    "$PY" -m pytest "${TAV_E2E:-tests/e2e}" -q -p no:cacheprovider "${extra[@]}" > "$log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || status=1
  summary="$(grep -E '[0-9]+ (passed|failed|error)' "$log" | tail -n1)"
  rows+=("$(printf '%-8s %-6s %5ss  %s' "$version" "$([ $rc -eq 0 ] && echo ok || echo FAIL)" "$(( $(date +%s) - start ))" "$summary")")
  grep -E '^(FAILED|ERROR) ' "$log" || true
done
echo
echo "ComfyUI  result  time   summary ($(date -u +%F))"
printf '%s\n' "${rows[@]}"
echo "logs: $LOGS"
exit $status
