#!/usr/bin/env bash
# Trains the default model into models/kjv-mamba (or the directory given with --out): installs what
# is missing (Debian's CPU-only python3-torch and the KJV text; tokenizers and safetensors from
# PyPI into build/train-venv, a virtual environment over Debian's /usr/bin/python3 so it sees that
# torch), then runs train.py. Extra arguments go to train.py.
set -euo pipefail
cd "$(dirname "$0")/../.."

packages=(python3-torch python3-tqdm python3-venv bible-kjv bible-kjv-text)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

venv=build/train-venv
if [[ ! -x $venv/bin/python ]]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
"$venv/bin/python" -m pip install -q -r tools/train/requirements.txt

args=("$@")
[[ " ${args[*]} " == *" --out "* ]] || args=(--out models/kjv-mamba "${args[@]}")
exec "$venv/bin/python" tools/train/train.py "${args[@]}"
