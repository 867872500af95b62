#!/usr/bin/env bash
# The long soak: 5 minutes, 128 concurrent clients of mixed, overloading and hostile load against
# `mambaserve serve` on 127.0.0.1 (tests/soak/soak.py says what it does and checks), writing the
# summary to bench/results/soak.json. Exits non-zero if any check fails.
#
#   scripts/soak.sh [extra soak.py flags, e.g. --duration-s 600 --clients 256]
#
# Builds nothing: build build/cpu/bin/mambaserve and mambactl first (cmake --preset cpu &&
# cmake --build build/cpu --target mambaserve mambactl). CTest's server_soak is the 30 s form.
set -euo pipefail
cd "$(dirname "$0")/.."

for bin in build/cpu/bin/mambaserve build/cpu/bin/mambactl; do
  if [[ ! -x $bin ]]; then
    echo "soak: $bin is missing; build it first (cmake --build build/cpu --target mambaserve mambactl)" >&2
    exit 1
  fi
done
scripts/python-test-env.sh build/pyenv >/dev/null
exec build/pyenv/bin/python3 tests/soak/soak.py --binary build/cpu/bin/mambaserve \
  --mambactl build/cpu/bin/mambactl --proto-dir proto --duration-s 300 --clients 128 \
  --json bench/results/soak.json "$@"
