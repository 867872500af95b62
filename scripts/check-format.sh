#!/usr/bin/env bash
# Fails (listing the files) when a C++ or CUDA source differs from what clang-format makes of it
# (.clang-format: Google style, 100 columns). `scripts/check-format.sh --fix` rewrites them instead.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.cc' '*.h' '*.cu' '*.cuh' ':!tests/data/**')
if [[ "${1:-}" == "--fix" ]]; then
  clang-format -i "${files[@]}"
  exit 0
fi
if ! clang-format --dry-run --Werror "${files[@]}" 2>/tmp/clang-format.$$; then
  grep -oE '^[^:]+\.(cc|h|cu|cuh)' /tmp/clang-format.$$ | sort -u | sed 's/^/  not formatted: /'
  rm -f /tmp/clang-format.$$
  echo "  run scripts/check-format.sh --fix"
  exit 1
fi
rm -f /tmp/clang-format.$$
echo "format: ${#files[@]} files clean"
