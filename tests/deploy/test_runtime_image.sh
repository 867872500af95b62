#!/usr/bin/env bash
# The container image's runtime stage, without a container engine: lints the Dockerfile (hadolint),
# gathers the runtime bundle the image receives (scripts/bundle-runtime.sh), checks it needs nothing
# from the build machine but the C/C++ runtime, then starts the server exactly as the CPU image's
# ENTRYPOINT and CMD do — unprivileged user, scrubbed environment, the image's PATH, LD_LIBRARY_PATH
# and writable XDG_CACHE_HOME, listening on 0.0.0.0 — and talks to it.
#   usage: test_runtime_image.sh BUILD_DIR PYENV
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:?BUILD_DIR}" && pwd)
pyenv=${2:?PYENV}
work=$(mktemp -d /tmp/mambaserve-image-XXXXXX)
server=""
cleanup() {
  [[ -n $server ]] && kill "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [[ -f $work/server.log ]] && tail -20 "$work/server.log" >&2; exit 1; }

"$root/scripts/python-test-env.sh" "$pyenv" >/dev/null
"$pyenv/bin/hadolint" "$root/Dockerfile" || fail "hadolint"
echo "hadolint: Dockerfile clean"

"$root/scripts/bundle-runtime.sh" "$build" "$work/opt"
# Everything the bundle loads resolves inside it, except the C/C++ runtime every base image has.
outside=$(LD_LIBRARY_PATH=$work/opt/lib ldd "$work/opt/bin/mambaserve" "$work/opt/bin/mambactl" |
  awk '$2 == "=>" {print $1, $3}' | grep -v " $work/opt/lib/" |
  grep -vE '^(libc|libm|libdl|libpthread|librt|libresolv|libstdc\+\+|libgcc_s)\.' || true)
[[ -z $outside ]] || fail "the bundle needs libraries from outside it: $outside"
echo "bundle: self-contained apart from the C/C++ runtime"

# The image's user (uid 10001) and its writable cache volume.
uid=10001
mkdir -p "$work/cache" && chown "$uid:$uid" "$work/cache"
chmod 755 "$work"
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
metrics=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
image_env=(env -i PATH="$work/opt/bin:/usr/bin:/bin" LD_LIBRARY_PATH="$work/opt/lib"
  XDG_CACHE_HOME="$work/cache" HOME="$work/cache")
as_user=(setpriv --reuid="$uid" --regid="$uid" --clear-groups)
"${as_user[@]}" "${image_env[@]}" mambaserve serve --listen "0.0.0.0:$port" \
  --metrics-listen "0.0.0.0:$metrics" 2>"$work/server.log" &
server=$!

ctl=("${image_env[@]}" mambactl --target "127.0.0.1:$port")
for _ in $(seq 600); do
  "${ctl[@]}" health >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || fail "the server exited"
  sleep 0.2
done
"${ctl[@]}" health || fail "never SERVING"
text=$("${ctl[@]}" generate --text "Once upon a time" --max-tokens 8 2>"$work/usage") || fail "generate"
grep -q "generated_tokens=8" "$work/usage" || fail "generate: $(cat "$work/usage")"
compgen -G "$work/cache/mambaserve/kjv-mamba-*/model.safetensors" >/dev/null ||
  fail "the default model was not unpacked into XDG_CACHE_HOME"
# Read whole before matching: grep -q would stop reading early and fail curl (under pipefail).
exposition=$(curl -sf "http://127.0.0.1:$metrics/metrics") || fail "/metrics: curl"
grep -q '^vllm:generation_tokens_total' <<<"$exposition" || fail "/metrics: no vllm:generation_tokens_total"
echo "server: SERVING as uid $uid on 0.0.0.0:$port, generated '${text//$'\n'/ }', /metrics up"

kill -TERM "$server"
rc=0
wait "$server" || rc=$?
server=""
[[ $rc -eq 0 ]] || fail "exit status $rc after SIGTERM"
echo "runtime image check: passed"
