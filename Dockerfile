# mambaserve container images. Two targets:
#   docker build --target gpu -t mambaserve:gpu .   CUDA backend (sm_80/86/89/90) + CPU fallback, on
#                                                    the NVIDIA CUDA runtime base
#   docker build --target cpu -t mambaserve:cpu .   CPU only, on plain Debian 12 (serves the embedded
#                                                    default model when no --model is given)
# Each build stage installs and builds with the project's own scripts, exactly as CI does; each
# runtime stage receives only what scripts/bundle-runtime.sh gathers (the binaries, the CUDA module
# and the shared libraries a bare base lacks) and runs as an unprivileged user.
#   docker run --gpus all -p 50051:50051 -p 9400:9400 -v /path/to/falcon-mamba-7b:/models:ro mambaserve:gpu
ARG CUDA_VERSION=13.0.1
ARG CUDA_OS=ubuntu24.04

# ---- GPU image -------------------------------------------------------------------------------
FROM nvidia/cuda:${CUDA_VERSION}-devel-${CUDA_OS} AS build-gpu
WORKDIR /src
COPY . .
RUN scripts/install-deps.sh --build-only \
    && cmake --preset cuda -DMAMBASERVE_BUILD_TESTS=OFF -DMAMBASERVE_BUILD_BENCH=OFF \
    && cmake --build build/cuda --target mambaserve mambactl mambaserve_cuda \
    && scripts/bundle-runtime.sh build/cuda /opt/mambaserve

FROM nvidia/cuda:${CUDA_VERSION}-runtime-${CUDA_OS} AS gpu
COPY --from=build-gpu /opt/mambaserve /opt/mambaserve
# Appended to the base's LD_LIBRARY_PATH, which carries the driver libraries the NVIDIA container
# toolkit mounts.
ENV PATH=/opt/mambaserve/bin:${PATH} \
    LD_LIBRARY_PATH=/opt/mambaserve/lib:${LD_LIBRARY_PATH} \
    XDG_CACHE_HOME=/var/cache/mambaserve
RUN useradd --system --uid 10001 --user-group --home-dir /var/cache/mambaserve --create-home mambaserve \
    && mkdir -p /models
USER 10001:10001
VOLUME ["/models", "/var/cache/mambaserve"]
EXPOSE 50051 9400
# Health is grpc.health.v1 (NOT_SERVING until the model is loaded and warmed up, and again while
# draining); Kubernetes probes it natively, this is for plain Docker. Loading 7B weights takes a while.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["mambactl", "--target", "127.0.0.1:50051", "health"]
ENTRYPOINT ["mambaserve", "serve"]
CMD ["--model", "/models", "--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9400"]

# ---- CPU image -------------------------------------------------------------------------------
FROM debian:12 AS build-cpu
WORKDIR /src
COPY . .
RUN scripts/install-deps.sh --build-only \
    && cmake --preset cpu -DMAMBASERVE_BUILD_TESTS=OFF -DMAMBASERVE_BUILD_BENCH=OFF \
    && cmake --build build/cpu --target mambaserve mambactl \
    && scripts/bundle-runtime.sh build/cpu /opt/mambaserve

FROM debian:12-slim AS cpu
COPY --from=build-cpu /opt/mambaserve /opt/mambaserve
ENV PATH=/opt/mambaserve/bin:${PATH} \
    LD_LIBRARY_PATH=/opt/mambaserve/lib \
    XDG_CACHE_HOME=/var/cache/mambaserve
RUN useradd --system --uid 10001 --user-group --home-dir /var/cache/mambaserve --create-home mambaserve \
    && mkdir -p /models
USER 10001:10001
# The embedded default model is generated into $XDG_CACHE_HOME on first start; mount a checkpoint
# at /models and pass --model /models to serve it instead.
VOLUME ["/var/cache/mambaserve"]
EXPOSE 50051 9400
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["mambactl", "--target", "127.0.0.1:50051", "health"]
ENTRYPOINT ["mambaserve", "serve"]
CMD ["--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9400"]
