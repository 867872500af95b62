#!/usr/bin/env -S /usr/bin/python3
"""Float64 reference implementation of Mamba-1 / Falcon-Mamba inference.

Run with Debian's interpreter, ``/usr/bin/python3`` (needs only ``python3-numpy``):

    /usr/bin/python3 tests/reference/mamba_ref.py --model DIR --tokens 5,17,42 \\
        --generate 64 --json OUT.json

writes ``{"last_logits": [V floats], "generated": [64 ids], "top2_gap": [64 floats]}``:
the logits at the last prompt position, the greedy continuation (argmax, ties to
the lowest id) and, for each generated token, the gap between the two largest
logits it was chosen from.

Everything is computed in float64 from the checkpoint's stored values, following
the Hugging Face ``MambaForCausalLM`` / ``FalconMambaForCausalLM`` semantics. The
module reads ``config.json`` and ``model.safetensors`` (or a sharded
``model.safetensors.index.json``) with its own parser; it shares no code with the
C++ engine.

Library use:
    model = MambaRef.from_dir(path)
    logits, state = model.forward(tokens)            # parallel over time
    logits = model.step(token, state)                # one decode step, state updated
    result = model.generate(tokens, 64)
    state = prompt_state(model, tokens)              # conv + ssm state per layer
"""

import argparse
import json
import os
import struct
import sys
import time

import numpy as np

# ---------------------------------------------------------------------------
# safetensors reading
# ---------------------------------------------------------------------------

_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}


def decode_raw(raw, dtype, shape):
    """Raw little-endian bytes (uint8 array or bytes) -> float64 array of `shape`."""
    if dtype == "F64":
        a = np.frombuffer(raw, dtype="<f8")
    elif dtype == "F32":
        a = np.frombuffer(raw, dtype="<f4")
    elif dtype == "F16":
        a = np.frombuffer(raw, dtype="<f2")
    elif dtype == "BF16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        a = bits.view(np.float32)
    else:
        raise ValueError("unsupported tensor dtype %s" % dtype)
    return a.astype(np.float64).reshape(shape)


def read_safetensors(path):
    """Reads every tensor of a .safetensors file as float64: {name: ndarray}."""
    size = os.path.getsize(path)
    if size < 8:
        raise ValueError("%s: too short for a safetensors file" % path)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    (header_len,) = struct.unpack("<Q", bytes(data[:8]))
    if 8 + header_len > size:
        raise ValueError("%s: header length %d runs past the end of the file" % (path, header_len))
    header = json.loads(bytes(data[8:8 + header_len]).decode("utf-8"))
    base = 8 + header_len
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info["dtype"]
        shape = tuple(int(s) for s in info["shape"])
        begin, end = (int(v) for v in info["data_offsets"])
        if dtype not in _ITEMSIZE:
            raise ValueError("%s: tensor %s has unsupported dtype %s" % (path, name, dtype))
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if end - begin != count * _ITEMSIZE[dtype] or base + end > size or begin < 0:
            raise ValueError("%s: tensor %s has bad data_offsets %s for %s%s"
                             % (path, name, info["data_offsets"], dtype, list(shape)))
        out[name] = decode_raw(data[base + begin:base + end], dtype, shape)
    del data
    return out


def read_checkpoint_tensors(model_dir):
    """All tensors of a checkpoint directory (single file or sharded) as float64."""
    single = os.path.join(model_dir, "model.safetensors")
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(single):
        return read_safetensors(single)
    if not os.path.exists(index):
        raise FileNotFoundError("%s: neither model.safetensors nor model.safetensors.index.json"
                                % model_dir)
    with open(index) as f:
        weight_map = json.load(f)["weight_map"]
    tensors = {}
    for fname in sorted(set(weight_map.values())):
        shard = read_safetensors(os.path.join(model_dir, fname))
        for name, where in weight_map.items():
            if where != fname:
                continue
            if name not in shard:
                raise ValueError("%s: index maps %s to %s, which lacks it" % (model_dir, name, fname))
            tensors[name] = shard[name]
    return tensors


# ---------------------------------------------------------------------------
# math helpers (all float64)
# ---------------------------------------------------------------------------

def silu(x):
    return x / (1.0 + np.exp(-x))


def softplus(x):
    # log1p(exp(x)) for x <= 20, x above (the Hugging Face threshold).
    return np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x, 20.0))))


def rms_norm(x, weight, eps):
    """x / sqrt(mean(x^2) + eps) over the last axis, times `weight` (None: weightless)."""
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y if weight is None else y * weight


# ---------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------

class LayerState(object):
    """Recurrent state of one layer for one sequence.

    conv: [E, K-1], column j holds the pre-conv input of position T-(K-1)+j
          (zeros for positions before the start); the last column is the newest.
    ssm:  [E, N].
    """

    def __init__(self, conv, ssm):
        self.conv = conv
        self.ssm = ssm

    def copy(self):
        return LayerState(self.conv.copy(), self.ssm.copy())


def round_to_bf16(x):
    """x (float64) through float32 to the nearest bfloat16 (ties to even), as float64."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32).astype(np.float64)


class MambaRef(object):
    def __init__(self, config, tensors, gemm_inputs=None):
        """gemm_inputs="bf16": round the activations every projection multiplies (in_proj, x_proj,
        dt_proj, out_proj, lm_head) to bfloat16 first, as an engine serving bf16 weights does;
        None keeps them exact."""
        if gemm_inputs not in (None, "bf16"):
            raise ValueError("gemm_inputs must be None or 'bf16'")
        self._q = round_to_bf16 if gemm_inputs == "bf16" else (lambda v: v)
        cfg = dict(config)
        t = dict(tensors)
        self.config = cfg
        self.model_type = cfg.get("model_type")
        if self.model_type not in ("mamba", "falcon_mamba"):
            raise ValueError("model_type %r is not mamba or falcon_mamba" % (self.model_type,))
        self.falcon = self.model_type == "falcon_mamba"
        n_layers = cfg.get("num_hidden_layers", cfg.get("n_layer"))
        if not isinstance(n_layers, int) or n_layers <= 0:
            raise ValueError("config: num_hidden_layers must be a positive integer")
        self.n_layers = n_layers
        self.eps = float(cfg.get("layer_norm_epsilon", 1e-5))
        self.mixer_eps = float(cfg.get("mixer_rms_eps", 1e-6) or 1e-6)
        use_bias = bool(cfg.get("use_bias", False))
        use_conv_bias = bool(cfg.get("use_conv_bias", True))
        tied = bool(cfg.get("tie_word_embeddings", True))

        def take(name, ndim):
            if name not in t:
                raise KeyError("checkpoint lacks tensor %s" % name)
            a = t[name]
            if a.ndim != ndim:
                raise ValueError("tensor %s has shape %s, expected %d dims" % (name, a.shape, ndim))
            return a

        self.emb = take("backbone.embeddings.weight", 2)
        self.V, self.D = self.emb.shape
        self.norm_f = take("backbone.norm_f.weight", 1)
        # Hugging Face semantics: tie_word_embeddings (default true) makes lm_head the
        # embedding matrix; an absent lm_head.weight means tied in any case.
        if tied or "lm_head.weight" not in t:
            self.lm_head = self.emb
        else:
            self.lm_head = take("lm_head.weight", 2)
        self.tied = self.lm_head is self.emb
        if self.lm_head.shape != (self.V, self.D):
            raise ValueError("lm_head.weight has shape %s, expected %s"
                             % (self.lm_head.shape, (self.V, self.D)))

        self.layers = []
        for i in range(n_layers):
            p = "backbone.layers.%d." % i
            m = p + "mixer."
            L = {}
            L["norm_w"] = take(p + "norm.weight", 1)
            L["in_w"] = take(m + "in_proj.weight", 2)
            E = L["in_w"].shape[0] // 2
            L["conv_w"] = take(m + "conv1d.weight", 3)  # [E,1,K]
            K = L["conv_w"].shape[2]
            L["conv_w"] = L["conv_w"][:, 0, :]
            L["x_w"] = take(m + "x_proj.weight", 2)
            L["dt_w"] = take(m + "dt_proj.weight", 2)
            R = L["dt_w"].shape[1]
            L["dt_b"] = take(m + "dt_proj.bias", 1)
            A_log = take(m + "A_log", 2)
            N = A_log.shape[1]
            L["A"] = -np.exp(A_log)
            L["Dp"] = take(m + "D", 1)
            L["out_w"] = take(m + "out_proj.weight", 2)
            L["in_b"] = take(m + "in_proj.bias", 1) if use_bias else None
            L["out_b"] = take(m + "out_proj.bias", 1) if use_bias else None
            L["conv_b"] = take(m + "conv1d.bias", 1) if use_conv_bias else np.zeros(E)
            expect = {
                "norm_w": (self.D,), "in_w": (2 * E, self.D), "conv_w": (E, K),
                "x_w": (R + 2 * N, E), "dt_w": (E, R), "dt_b": (E,), "A": (E, N),
                "Dp": (E,), "out_w": (self.D, E), "conv_b": (E,),
            }
            if use_bias:
                expect["in_b"] = (2 * E,)
                expect["out_b"] = (self.D,)
            for key, shape in expect.items():
                if L[key].shape != shape:
                    raise ValueError("layer %d: %s has shape %s, expected %s"
                                     % (i, key, L[key].shape, shape))
            if K < 2:
                raise ValueError("layer %d: conv kernel %d < 2" % (i, K))
            if i == 0:
                self.E, self.N, self.R, self.K = E, N, R, K
            elif (E, N, R, K) != (self.E, self.N, self.R, self.K):
                raise ValueError("layer %d: sizes differ from layer 0" % i)
            self.layers.append(L)

    # -- construction -------------------------------------------------------

    @classmethod
    def from_dir(cls, model_dir, gemm_inputs=None):
        with open(os.path.join(model_dir, "config.json")) as f:
            config = json.load(f)
        return cls(config, read_checkpoint_tensors(model_dir), gemm_inputs)

    def init_state(self):
        return [LayerState(np.zeros((self.E, self.K - 1)), np.zeros((self.E, self.N)))
                for _ in range(self.n_layers)]

    # -- shared per-token pieces (act on the last axis, any leading shape) ---

    def _ssm_inputs(self, L, xa):
        x_dbl = self._q(xa) @ L["x_w"].T
        dt_low = x_dbl[..., :self.R]
        B = x_dbl[..., self.R:self.R + self.N]
        C = x_dbl[..., self.R + self.N:]
        if self.falcon:
            B = rms_norm(B, None, self.mixer_eps)
            C = rms_norm(C, None, self.mixer_eps)
            dt_low = rms_norm(dt_low, None, self.mixer_eps)
        dt = softplus(self._q(dt_low) @ L["dt_w"].T + L["dt_b"])
        return dt, B, C

    def _final_logits(self, hidden):
        return self._q(rms_norm(hidden, self.norm_f, self.eps)) @ self.lm_head.T

    # -- one token ------------------------------------------------------------

    def step(self, token, state, compute_logits=True):
        """Runs one token through the model, updating `state` in place; returns [V] logits."""
        h = self.emb[int(token)].copy()
        E = self.E
        for L, st in zip(self.layers, state):
            u = rms_norm(h, L["norm_w"], self.eps)
            xz = L["in_w"] @ self._q(u)
            if L["in_b"] is not None:
                xz = xz + L["in_b"]
            x, z = xz[:E], xz[E:]
            window = np.concatenate([st.conv, x[:, None]], axis=1)  # [E,K], oldest first
            xc = np.sum(window * L["conv_w"], axis=1) + L["conv_b"]
            st.conv = window[:, 1:].copy()
            xa = silu(xc)
            dt, B, C = self._ssm_inputs(L, xa)
            st.ssm = np.exp(dt[:, None] * L["A"]) * st.ssm + (dt * xa)[:, None] * B[None, :]
            y = st.ssm @ C + L["Dp"] * xa
            y = y * silu(z)
            out = L["out_w"] @ self._q(y)
            if L["out_b"] is not None:
                out = out + L["out_b"]
            h = h + out
        return self._final_logits(h) if compute_logits else None

    # -- a whole sequence, parallel over time --------------------------------

    def forward(self, tokens, state=None, last_only=False):
        """Runs `tokens` with the time-parallel formulation.

        The convolution is evaluated over the whole sequence at once per channel
        (np.correlate over the zero- or state-padded input) and the selective scan
        is a loop over time on precomputed [T,E,N] coefficients. Returns
        (logits [T,V] or [V] if last_only, new state list); `state` is not modified.
        """
        tokens = [int(v) for v in tokens]
        T = len(tokens)
        if T == 0:
            raise ValueError("empty token list")
        E, K = self.E, self.K
        if state is None:
            state = self.init_state()
        new_state = []
        H = self.emb[tokens].copy()  # [T,D]
        for L, st in zip(self.layers, state):
            U = rms_norm(H, L["norm_w"], self.eps)
            XZ = self._q(U) @ L["in_w"].T
            if L["in_b"] is not None:
                XZ = XZ + L["in_b"]
            X, Z = XZ[:, :E], XZ[:, E:]
            Xp = np.concatenate([st.conv, X.T], axis=1)  # [E, K-1+T]
            Xc = np.empty((E, T))
            for c in range(E):
                Xc[c] = np.correlate(Xp[c], L["conv_w"][c], mode="valid")
            Xc = Xc.T + L["conv_b"]  # [T,E]
            conv_next = Xp[:, T:].copy()  # last K-1 inputs
            Xa = silu(Xc)
            dt, B, C = self._ssm_inputs(L, Xa)  # [T,E], [T,N], [T,N]
            dA = np.exp(dt[:, :, None] * L["A"][None, :, :])  # [T,E,N]
            dBx = (dt * Xa)[:, :, None] * B[:, None, :]  # [T,E,N]
            h = st.ssm.copy()
            Y = np.empty((T, E))
            for t in range(T):
                h = dA[t] * h + dBx[t]
                Y[t] = h @ C[t]
            Y = (Y + L["Dp"] * Xa) * silu(Z)
            O = self._q(Y) @ L["out_w"].T
            if L["out_b"] is not None:
                O = O + L["out_b"]
            H = H + O
            new_state.append(LayerState(conv_next, h))
        if last_only:
            return self._final_logits(H[-1]), new_state
        return self._final_logits(H), new_state

    # -- greedy generation ----------------------------------------------------

    def prefill(self, tokens, mode="sequential"):
        """Returns (last-position logits [V], state) after the prompt."""
        if mode == "parallel":
            return self.forward(tokens, last_only=True)
        if mode != "sequential":
            raise ValueError("prefill mode must be sequential or parallel")
        tokens = [int(v) for v in tokens]
        if not tokens:
            raise ValueError("empty token list")
        state = self.init_state()
        for tok in tokens[:-1]:
            self.step(tok, state, compute_logits=False)
        return self.step(tokens[-1], state), state

    def generate(self, tokens, n_generate, prefill="sequential"):
        for tok in tokens:
            if not 0 <= int(tok) < self.V:
                raise ValueError("token id %d outside the vocabulary [0, %d)" % (int(tok), self.V))
        logits, state = self.prefill(tokens, prefill)
        last_logits = logits
        generated, gaps = [], []
        for i in range(n_generate):
            tok = int(np.argmax(logits))  # first maximum: ties go to the lowest id
            top2 = np.partition(logits, -2)[-2:] if self.V >= 2 else np.array([0.0, 0.0])
            generated.append(tok)
            gaps.append(float(top2[1] - top2[0]))
            if i + 1 < n_generate:
                logits = self.step(tok, state)
        return {"last_logits": last_logits, "generated": generated, "top2_gap": gaps}


def prompt_state(model, tokens):
    """Per-layer state after `tokens`: list of {"conv": [E,K-1], "ssm": [E,N]} float64 arrays."""
    if not isinstance(model, MambaRef):
        model = MambaRef.from_dir(model)
    state = model.init_state()
    for tok in tokens:
        model.step(tok, state, compute_logits=False)
    return [{"conv": s.conv.copy(), "ssm": s.ssm.copy()} for s in state]


def parse_tokens(text):
    return [int(v) for v in text.replace(" ", "").split(",") if v != ""]


def main(argv=None):
    ap = argparse.ArgumentParser(description="Float64 reference for Mamba / Falcon-Mamba.")
    ap.add_argument("--model", required=True, help="checkpoint directory")
    ap.add_argument("--tokens", required=True, help="comma-separated prompt token ids")
    ap.add_argument("--generate", type=int, default=64, help="greedy tokens to generate")
    ap.add_argument("--json", required=True, help="output JSON path")
    ap.add_argument("--prefill", choices=("sequential", "parallel"), default="sequential",
                    help="prompt formulation (both give the same numbers)")
    args = ap.parse_args(argv)
    t0 = time.time()
    model = MambaRef.from_dir(args.model)
    t1 = time.time()
    res = model.generate(parse_tokens(args.tokens), args.generate, args.prefill)
    t2 = time.time()
    out = {
        "last_logits": [float(v) for v in res["last_logits"]],
        "generated": res["generated"],
        "top2_gap": res["top2_gap"],
    }
    with open(args.json, "w") as f:
        json.dump(out, f)
    sys.stderr.write("mamba_ref: load %.2fs, run %.2fs\n" % (t1 - t0, t2 - t1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
