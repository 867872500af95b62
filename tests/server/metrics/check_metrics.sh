#!/usr/bin/env bash
# promtool check metrics over an exposition: stdin, or the given metrics_test_exporter's --dump.
# The one lint allowed is "metric names should not contain ':'" for vllm:* names, which vLLM
# compatibility requires (vLLM's own /metrics draws the same lint). Parse errors always fail.
set -euo pipefail
if [[ $# -ge 1 ]]; then
  body=$("$1" --dump)
else
  body=$(cat)
fi
[[ -n "$body" ]] || { echo "check_metrics: empty exposition" >&2; exit 1; }
set +e
report=$(printf '%s\n' "$body" | promtool check metrics 2>&1)
rc=$?
set -e
problems=$(printf '%s\n' "$report" | grep -Ev "^vllm:[^ ]+ metric names should not contain ':'$" |
           grep -v '^$' || true)
if [[ $rc -ne 0 && $rc -ne 3 ]] || [[ -n "$problems" ]]; then
  echo "promtool check metrics failed (rc=$rc):" >&2
  printf '%s\n' "$problems" >&2
  exit 1
fi
families=$(printf '%s\n' "$body" | grep -c '^# TYPE ')
echo "promtool check metrics: OK ($families families; only the vllm: colon lint, as on vLLM)"
