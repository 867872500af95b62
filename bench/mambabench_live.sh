#!/usr/bin/env bash
# Starts `mambaserve serve` on a model, runs mambabench against it, and stops the server: one
# command for a live-server measurement on a machine with nothing else set up (scripts/gpu-check.sh
# runs it against a CUDA server).
#   bench/mambabench_live.sh --mambaserve BIN --mambabench BIN --model DIR --out FILE.json
#       [--backend auto|cpu|cuda] [--serve-args "ARGS"] [-- MAMBABENCH ARGS...]
# The server listens on a free loopback port and is measured once its health check says SERVING
# (mambactl from beside BIN); its log lands next to the result (FILE.server.log) unless
# --server-log says where. Exit status: mambabench's, or 1 when the server did not start.
set -uo pipefail

mambaserve="" mambabench="" model="" out="" backend=auto serve_args="" server_log=""
while (($#)); do
  case $1 in
    --mambaserve) mambaserve=$2; shift 2 ;;
    --mambabench) mambabench=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    --serve-args) serve_args=$2; shift 2 ;;
    --server-log) server_log=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "mambabench_live: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [[ -z $mambaserve || -z $mambabench || -z $model || -z $out ]]; then
  echo "usage: bench/mambabench_live.sh --mambaserve BIN --mambabench BIN --model DIR --out FILE" \
    "[--backend B] [--serve-args \"ARGS\"] [--server-log FILE] [-- MAMBABENCH ARGS...]" >&2
  exit 2
fi
server_log=${server_log:-$out.server.log}

work=$(mktemp -d /tmp/mambabench-live-XXXXXX)
server_pid=""
stop_server() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    # The server drains (streams in flight finish) before it exits; then it is killed.
    for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap stop_server EXIT

# shellcheck disable=SC2086 # --serve-args is a list of flags
"$mambaserve" serve --model "$model" --backend "$backend" --listen 127.0.0.1:0 \
  --port-file "$work/port" --metrics-listen off $serve_args 2> "$server_log" &
server_pid=$!
# The server listens at once and answers health NOT_SERVING while it loads the model (a large
# checkpoint onto a GPU takes a while): up to 5 minutes for it to be SERVING.
mambactl=$(dirname "$mambaserve")/mambactl
target=""
for _ in $(seq 1500); do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "mambabench_live: the server exited before serving; its log:" >&2
    tail -20 "$server_log" >&2
    exit 1
  fi
  [[ -z $target && -s $work/port ]] && target=127.0.0.1:$(cat "$work/port")
  [[ -n $target ]] && "$mambactl" --target "$target" health > /dev/null 2>&1 && break
  sleep 0.2
done
if ! "$mambactl" --target "${target:-127.0.0.1:0}" health > /dev/null 2>&1; then
  echo "mambabench_live: the server was not serving within 300 s" >&2
  exit 1
fi
echo "mambabench_live: server on $target (backend $backend), pid $server_pid"
"$mambabench" --target "$target" --server-pid "$server_pid" --out "$out" "$@"
