#!/usr/bin/env bash
# Load-test a running skiplock scheduler. Flags: scripts/benchmark.sh -h
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$repo/.venv/bin/python"
if [[ ! -x "$python" ]]; then
  echo "benchmark.sh: $python not found; run 'make run' or 'make test' first to create it" >&2
  exit 1
fi
exec "$python" "$repo/scripts/benchmark.py" "$@"
