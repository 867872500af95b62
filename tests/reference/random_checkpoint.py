#!/usr/bin/env -S /usr/bin/python3
"""Random Mamba / Falcon-Mamba checkpoints written with NumPy only.

Run with Debian's interpreter, ``/usr/bin/python3`` (needs ``python3-numpy``):

    /usr/bin/python3 tests/reference/random_checkpoint.py --preset 130m --out DIR

Used by the reference self-check and for timing the reference; independent of the
engine's own ``make-model`` (the two generators need not agree on weights).
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np  # noqa: E402

PRESETS = {
    # D, layers, E, N, R, K, V
    "tiny": dict(d_model=64, n_layers=2, d_inner=128, d_state=16, dt_rank=4, d_conv=4, vocab=512),
    "130m": dict(d_model=768, n_layers=24, d_inner=1536, d_state=16, dt_rank=48, d_conv=4,
                 vocab=50280),
}


def random_model(rng, d_model, n_layers, d_inner, d_state, dt_rank, d_conv, vocab,
                 model_type="mamba", use_bias=False, use_conv_bias=True, tied=True,
                 eps=1e-5, mixer_rms_eps=1e-6):
    """Returns (config dict, {name: float32 array}) with well-scaled random weights."""
    D, E, N, R, K, V = d_model, d_inner, d_state, dt_rank, d_conv, vocab

    def normal(shape, scale):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    t = {}
    t["backbone.embeddings.weight"] = normal((V, D), 1.0)
    for i in range(n_layers):
        p = "backbone.layers.%d." % i
        m = p + "mixer."
        t[p + "norm.weight"] = (1.0 + normal((D,), 0.1)).astype(np.float32)
        t[m + "in_proj.weight"] = normal((2 * E, D), 1.0 / np.sqrt(D))
        t[m + "conv1d.weight"] = normal((E, 1, K), 1.0 / np.sqrt(K))
        if use_conv_bias:
            t[m + "conv1d.bias"] = normal((E,), 0.1)
        t[m + "x_proj.weight"] = normal((R + 2 * N, E), 1.0 / np.sqrt(E))
        t[m + "dt_proj.weight"] = normal((E, R), 1.0 / np.sqrt(R))
        dt = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), E))
        t[m + "dt_proj.bias"] = (dt + np.log(-np.expm1(-dt))).astype(np.float32)  # softplus^-1
        A = np.tile(np.arange(1, N + 1, dtype=np.float64), (E, 1)) * rng.uniform(0.5, 1.5, (E, 1))
        t[m + "A_log"] = np.log(A).astype(np.float32)
        t[m + "D"] = (1.0 + normal((E,), 0.1)).astype(np.float32)
        t[m + "out_proj.weight"] = normal((D, E), 1.0 / np.sqrt(E))
        if use_bias:
            t[m + "in_proj.bias"] = normal((2 * E,), 0.1)
            t[m + "out_proj.bias"] = normal((D,), 0.1)
    t["backbone.norm_f.weight"] = (1.0 + normal((D,), 0.1)).astype(np.float32)
    if not tied:
        t["lm_head.weight"] = normal((V, D), 1.0 / np.sqrt(D))
    config = {
        "architectures": ["FalconMambaForCausalLM" if model_type == "falcon_mamba"
                          else "MambaForCausalLM"],
        "model_type": model_type,
        "hidden_size": D,
        "num_hidden_layers": n_layers,
        "intermediate_size": E,
        "expand": E // D,
        "state_size": N,
        "conv_kernel": K,
        "time_step_rank": R,
        "vocab_size": V,
        "layer_norm_epsilon": eps,
        "use_bias": use_bias,
        "use_conv_bias": use_conv_bias,
        "residual_in_fp32": True,
        "tie_word_embeddings": tied,
    }
    if model_type == "falcon_mamba":
        config["mixer_rms_eps"] = mixer_rms_eps
    return config, t


def write_checkpoint(model_dir, config, tensors, dtype="f32", shards=1):
    os.makedirs(model_dir, exist_ok=True)
    cfg = dict(config)
    cfg["torch_dtype"] = {"F32": "float32", "F16": "float16", "BF16": "bfloat16",
                          "F64": "float64"}[safetensors_np.canonical_dtype(dtype)]
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    if shards > 1:
        safetensors_np.write_sharded(model_dir, tensors, dtype, shards)
    else:
        safetensors_np.write_safetensors(os.path.join(model_dir, "model.safetensors"), tensors, dtype)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--model-type", choices=("mamba", "falcon_mamba"), default="mamba")
    ap.add_argument("--dtype", choices=("f32", "f16", "bf16"), default="f32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--untie-embeddings", action="store_true")
    ap.add_argument("--use-bias", action="store_true")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    shape = dict(PRESETS[a.preset])
    if a.layers:
        shape["n_layers"] = a.layers
    cfg, t = random_model(np.random.default_rng(a.seed), model_type=a.model_type,
                          use_bias=a.use_bias, tied=not a.untie_embeddings, **shape)
    write_checkpoint(a.out, cfg, t, a.dtype, a.shards)
    return 0


if __name__ == "__main__":
    sys.exit(main())
