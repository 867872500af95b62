#!/usr/bin/env -S /usr/bin/python3
"""Self-check of the float64 reference (does not use the C++ engine).

Run with Debian's interpreter: ``/usr/bin/python3 tests/reference/test_reference_selfcheck.py``
(needs only ``python3-numpy``). Prints one line per check and ``N passed, M failed``;
exits non-zero if any check fails. Takes a few seconds.
"""

import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mamba_ref  # noqa: E402
import random_checkpoint  # noqa: E402
import safetensors_np  # noqa: E402

CHECKS = []
TMP = None


def check(fn):
    CHECKS.append(fn)
    return fn


def tmpdir(name):
    path = os.path.join(TMP, name)
    os.makedirs(path, exist_ok=True)
    return path


def assert_close(a, b, tol, what):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError("%s: shapes %s vs %s" % (what, a.shape, b.shape))
    err = float(np.max(np.abs(a - b))) if a.size else 0.0
    if not err <= tol:
        raise AssertionError("%s: max abs diff %.3e > %.1e" % (what, err, tol))


def tiny_shape(**over):
    shape = dict(d_model=16, n_layers=2, d_inner=32, d_state=8, dt_rank=3, d_conv=4, vocab=40)
    shape.update(over)
    return shape


def make_dir(name, seed=0, dtype="f32", shards=1, **kw):
    shape = tiny_shape(**{k: kw.pop(k) for k in list(kw) if k in tiny_shape()})
    cfg, t = random_checkpoint.random_model(np.random.default_rng(seed), **dict(shape, **kw))
    path = tmpdir(name)
    random_checkpoint.write_checkpoint(path, cfg, t, dtype, shards)
    return path, cfg, t


TOKENS = [3, 17, 0, 39, 5, 5, 22, 11, 8, 30, 1, 2, 19]


def compare_parallel_and_steps(model, tokens):
    """(a): every position's logits and the final state, parallel vs step by step."""
    logits_par, state_par = model.forward(tokens)
    state = model.init_state()
    logits_seq = np.array([model.step(tok, state) for tok in tokens])
    assert_close(logits_par, logits_seq, 1e-12, "logits per position")
    for i, (a, b) in enumerate(zip(state_par, state)):
        assert_close(a.conv, b.conv, 1e-12, "layer %d conv state" % i)
        assert_close(a.ssm, b.ssm, 1e-12, "layer %d ssm state" % i)
    if np.max(np.abs(logits_seq)) < 1e-3:
        raise AssertionError("logits are degenerate (all ~0)")


# ---------------------------------------------------------------------------
# (a) parallel prefill == step-by-step decode
# ---------------------------------------------------------------------------

@check
def parallel_equals_steps_mamba():
    path, _, _ = make_dir("a_mamba", seed=1)
    compare_parallel_and_steps(mamba_ref.MambaRef.from_dir(path), TOKENS)


@check
def parallel_equals_steps_falcon_bias_k3():
    path, _, _ = make_dir("a_falcon", seed=2, model_type="falcon_mamba", use_bias=True,
                          tied=False, d_conv=3, d_state=5)
    compare_parallel_and_steps(mamba_ref.MambaRef.from_dir(path), TOKENS)


@check
def parallel_equals_steps_no_conv_bias_k2():
    path, _, _ = make_dir("a_noconvbias", seed=3, use_conv_bias=False, d_conv=2)
    compare_parallel_and_steps(mamba_ref.MambaRef.from_dir(path), TOKENS)


@check
def parallel_continues_from_state():
    path, _, _ = make_dir("a_cont", seed=4, model_type="falcon_mamba")
    model = mamba_ref.MambaRef.from_dir(path)
    full, full_state = model.forward(TOKENS)
    head, state = model.forward(TOKENS[:5])
    tail, state2 = model.forward(TOKENS[5:], state)
    assert_close(np.concatenate([head, tail]), full, 1e-12, "split prefill")
    for a, b in zip(state2, full_state):
        assert_close(a.ssm, b.ssm, 1e-12, "ssm state")
        assert_close(a.conv, b.conv, 1e-12, "conv state")
    # a prompt of 1 or 2 tokens (shorter than K-1) must keep the zero padding right
    for n in (1, 2):
        _, st = model.forward(TOKENS[:n])
        ref = mamba_ref.prompt_state(model, TOKENS[:n])
        for a, b in zip(st, ref):
            assert_close(a.conv, b["conv"], 1e-12, "short-prompt conv state")


@check
def generate_same_with_both_prefills():
    path, _, _ = make_dir("a_gen", seed=5)
    model = mamba_ref.MambaRef.from_dir(path)
    r1 = model.generate(TOKENS, 20, "sequential")
    r2 = model.generate(TOKENS, 20, "parallel")
    assert_close(r1["last_logits"], r2["last_logits"], 1e-12, "last logits")
    assert r1["generated"] == r2["generated"], (r1["generated"], r2["generated"])
    assert len(r1["generated"]) == 20 and len(r1["top2_gap"]) == 20


@check
def prompt_state_layout():
    path, _, t = make_dir("a_state", seed=6)
    model = mamba_ref.MambaRef.from_dir(path)
    st = mamba_ref.prompt_state(path, TOKENS)
    assert len(st) == model.n_layers
    assert st[0]["conv"].shape == (model.E, model.K - 1) and st[0]["ssm"].shape == (model.E, model.N)
    # layer 0's conv state holds in_proj's x half of the last K-1 tokens, oldest first
    emb = t["backbone.embeddings.weight"].astype(np.float64)
    w = t["backbone.layers.0.norm.weight"].astype(np.float64)
    in_w = t["backbone.layers.0.mixer.in_proj.weight"].astype(np.float64)
    for j in range(model.K - 1):
        tok = TOKENS[len(TOKENS) - (model.K - 1) + j]
        u = emb[tok]
        x = in_w[:model.E] @ (u / np.sqrt(np.mean(u * u) + 1e-5) * w)
        assert_close(st[0]["conv"][:, j], x, 1e-12, "conv state column %d" % j)


# ---------------------------------------------------------------------------
# (b) loading: tied / untied / sharded / sizes from shapes
# ---------------------------------------------------------------------------

@check
def tied_and_untied_lm_head():
    p_tied, _, t_tied = make_dir("b_tied", seed=7, tied=True)
    p_untied, _, t_untied = make_dir("b_untied", seed=7, tied=False)
    assert "lm_head.weight" not in t_tied and "lm_head.weight" in t_untied
    m_tied = mamba_ref.MambaRef.from_dir(p_tied)
    m_untied = mamba_ref.MambaRef.from_dir(p_untied)
    assert m_tied.tied and not m_untied.tied
    assert_close(m_tied.lm_head, t_tied["backbone.embeddings.weight"], 0, "tied lm_head")
    assert_close(m_untied.lm_head, t_untied["lm_head.weight"], 0, "untied lm_head")
    # Same backbone (same seed): final hidden states agree, logits are hidden @ lm_head.T.
    def final_hidden(model):
        _, st = model.forward(TOKENS[:-1])
        saved = model.lm_head
        model.lm_head = np.eye(model.D)  # logits become the normalised hidden state
        try:
            f = model.step(TOKENS[-1], st)
        finally:
            model.lm_head = saved
        return f
    f = final_hidden(m_tied)
    assert_close(final_hidden(m_untied), f, 1e-12, "backbone of tied vs untied")
    lt, _ = m_tied.forward(TOKENS, last_only=True)
    lu, _ = m_untied.forward(TOKENS, last_only=True)
    assert_close(lt, t_tied["backbone.embeddings.weight"].astype(np.float64) @ f, 1e-12, "tied")
    assert_close(lu, t_untied["lm_head.weight"].astype(np.float64) @ f, 1e-12, "untied")
    assert np.max(np.abs(lt - lu)) > 1e-3


@check
def tie_flag_wins_over_stray_lm_head():
    # Hugging Face semantics: tie_word_embeddings=true uses the embeddings even if a
    # lm_head.weight tensor is stored.
    path, cfg, t = make_dir("b_stray", seed=8, tied=False)
    cfg = dict(cfg, tie_word_embeddings=True)
    random_checkpoint.write_checkpoint(path, cfg, t)
    m = mamba_ref.MambaRef.from_dir(path)
    assert m.tied


@check
def sharded_equals_single_file():
    p1, _, _ = make_dir("b_single", seed=9, model_type="falcon_mamba")
    p2, _, _ = make_dir("b_sharded", seed=9, model_type="falcon_mamba", shards=3)
    assert not os.path.exists(os.path.join(p2, "model.safetensors"))
    t1 = mamba_ref.read_checkpoint_tensors(p1)
    t2 = mamba_ref.read_checkpoint_tensors(p2)
    assert sorted(t1) == sorted(t2)
    for k in t1:
        assert_close(t1[k], t2[k], 0, k)


@check
def sizes_come_from_shapes_not_config():
    path, cfg, t = make_dir("b_sizes", seed=10, d_inner=24, dt_rank=5, d_state=6, vocab=33)
    bad = dict(cfg, intermediate_size=999, time_step_rank=1, state_size=2, vocab_size=7,
               hidden_size=3, expand=9)
    random_checkpoint.write_checkpoint(path, bad, t)
    m = mamba_ref.MambaRef.from_dir(path)
    assert (m.D, m.E, m.N, m.R, m.K, m.V) == (16, 24, 6, 5, 4, 33), (m.D, m.E, m.N, m.R, m.K, m.V)


@check
def missing_tensor_is_an_error():
    path, cfg, t = make_dir("b_missing", seed=11)
    t = dict(t)
    del t["backbone.layers.1.mixer.dt_proj.bias"]
    random_checkpoint.write_checkpoint(path, cfg, t)
    try:
        mamba_ref.MambaRef.from_dir(path)
    except KeyError as e:
        assert "dt_proj.bias" in str(e)
    else:
        raise AssertionError("loading succeeded without dt_proj.bias")


# ---------------------------------------------------------------------------
# (c) bf16 / f16 decoding
# ---------------------------------------------------------------------------

@check
def bf16_rounding_and_decoding():
    vals = np.array([1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, math.pi, -2.0, 1.0 / 3.0, 0.0,
                     -0.0, 1e-3], dtype=np.float32)
    bits = safetensors_np.float32_to_bf16_bits(vals)
    expect_bits = [0x3F80, 0x3F82, 0x4049, 0xC000, 0x3EAB, 0x0000, 0x8000, 0x3A83]
    assert [int(b) for b in bits] == expect_bits, [hex(int(b)) for b in bits]
    expect = [1.0, 1.015625, 3.140625, -2.0, 0.333984375, 0.0, -0.0, 0.00099945068359375]
    path = os.path.join(tmpdir("c"), "bf16.safetensors")
    safetensors_np.write_safetensors(path, {"v": vals, "raw": np.array([0x7F80, 0x0001], np.uint16)},
                                     "bf16")
    got = mamba_ref.read_safetensors(path)
    assert got["v"].dtype == np.float64
    assert got["v"].tolist() == expect, got["v"].tolist()
    assert got["raw"][0] == np.inf and got["raw"][1] == 2.0 ** -133


@check
def rounded_gemm_inputs():
    # round_to_bf16 is the bf16 rounding of the files' encoder, kept in float64.
    vals = np.random.default_rng(3).normal(size=1000) * 10.0 ** np.arange(-3, 7).repeat(100)
    want = safetensors_np.bf16_bits_to_float32(safetensors_np.float32_to_bf16_bits(
        vals.astype(np.float32))).astype(np.float64)
    assert np.array_equal(mamba_ref.round_to_bf16(vals), want)
    # A model whose GEMMs take rounded inputs moves away from the exact one, but only a little,
    # and its step-by-step and time-parallel forms still agree.
    path, _, _ = make_dir("rounded", seed=4)
    exact = mamba_ref.MambaRef.from_dir(path)
    rounded = mamba_ref.MambaRef.from_dir(path, gemm_inputs="bf16")
    a, _ = exact.forward(TOKENS, last_only=True)
    b, _ = rounded.forward(TOKENS, last_only=True)
    assert 1e-6 < np.max(np.abs(a - b)) < 0.1, np.max(np.abs(a - b))
    compare_parallel_and_steps(rounded, TOKENS)


@check
def f16_decoding():
    bits = np.array([0x3C00, 0xC000, 0x3555, 0x0001, 0x7BFF, 0x8000], dtype=np.uint16)
    expect = [1.0, -2.0, 0.333251953125, 2.0 ** -24, 65504.0, -0.0]
    path = os.path.join(tmpdir("c"), "f16.safetensors")
    safetensors_np.write_safetensors(path, {"v": bits.view(np.float16).reshape(2, 3)}, "f16")
    got = mamba_ref.read_safetensors(path)
    assert got["v"].shape == (2, 3) and got["v"].dtype == np.float64
    assert got["v"].ravel().tolist() == expect, got["v"].ravel().tolist()


@check
def half_precision_models_load_rounded_weights():
    for dtype in ("bf16", "f16"):
        path, cfg, t = make_dir("c_model_" + dtype, seed=12, dtype=dtype, model_type="falcon_mamba")
        m_file = mamba_ref.MambaRef.from_dir(path)
        rounded = {k: safetensors_np.round_to_dtype(v, dtype) for k, v in t.items()}
        m_mem = mamba_ref.MambaRef(cfg, rounded)
        m_f32 = mamba_ref.MambaRef(cfg, {k: v.astype(np.float64) for k, v in t.items()})
        a, _ = m_file.forward(TOKENS)
        b, _ = m_mem.forward(TOKENS)
        c, _ = m_f32.forward(TOKENS)
        assert_close(a, b, 0, dtype + " file vs rounded weights")
        assert np.max(np.abs(a - c)) > 1e-6, dtype + " rounding had no effect"


# ---------------------------------------------------------------------------
# (d) Falcon-Mamba's B/C/dt RMSNorm only for falcon_mamba
# ---------------------------------------------------------------------------

@check
def falcon_norm_only_for_falcon():
    _, cfg, t = make_dir("d", seed=13)
    t64 = {k: v.astype(np.float64) for k, v in t.items()}
    m = mamba_ref.MambaRef(dict(cfg, model_type="mamba"), t64)
    f = mamba_ref.MambaRef(dict(cfg, model_type="falcon_mamba", mixer_rms_eps=1e-30), t64)
    assert not m.falcon and f.falcon
    lm, _ = m.forward(TOKENS)
    lf, _ = f.forward(TOKENS)
    assert np.max(np.abs(lm - lf)) > 1e-3, "falcon and mamba agree"
    # The weightless norm makes falcon invariant to scaling x_proj; plain mamba is not.
    scaled = dict(t64)
    for i in range(cfg["num_hidden_layers"]):
        key = "backbone.layers.%d.mixer.x_proj.weight" % i
        scaled[key] = t64[key] * 7.0
    m2 = mamba_ref.MambaRef(dict(cfg, model_type="mamba"), scaled)
    f2 = mamba_ref.MambaRef(dict(cfg, model_type="falcon_mamba", mixer_rms_eps=1e-30), scaled)
    assert_close(f2.forward(TOKENS)[0], lf, 1e-10, "falcon under x_proj scaling")
    assert np.max(np.abs(m2.forward(TOKENS)[0] - lm)) > 1e-3, "mamba ignored x_proj scaling"


@check
def mixer_rms_eps_read_and_defaulted():
    _, cfg, t = make_dir("d_eps", seed=14, model_type="falcon_mamba", mixer_rms_eps=0.25)
    assert mamba_ref.MambaRef(cfg, t).mixer_eps == 0.25
    cfg2 = dict(cfg)
    del cfg2["mixer_rms_eps"]
    assert mamba_ref.MambaRef(cfg2, t).mixer_eps == 1e-6
    a, _ = mamba_ref.MambaRef(cfg, t).forward(TOKENS)
    b, _ = mamba_ref.MambaRef(cfg2, t).forward(TOKENS)
    assert np.max(np.abs(a - b)) > 1e-6


# ---------------------------------------------------------------------------
# (e) a 1-layer D=2, E=2, N=1, K=2, R=1, V=3 model computed by hand
# ---------------------------------------------------------------------------

HAND = {
    "emb": [[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0]],
    "norm": [1.0, 0.5],
    "in_w": [[0.5, -0.25], [0.75, 1.0], [-1.0, 0.5], [0.25, 0.125]],  # rows: x0, x1, z0, z1
    "in_b": [0.125, -0.25, 0.5, 0.0625],
    "conv_w": [[0.5, 1.0], [-0.75, 0.25]],  # [channel][k], k=1 multiplies the current token
    "conv_b": [0.0625, -0.125],
    "x_w": [[0.5, -1.0], [1.25, 0.5], [-0.5, 0.75]],  # rows: dt_low, B, C
    "dt_w": [[0.75], [-1.5]],
    "dt_b": [-1.0, 0.5],
    "A_log": [[0.25], [-0.5]],
    "D": [1.0, -0.5],
    "out_w": [[0.5, -1.0], [0.25, 0.75]],
    "out_b": [0.125, -0.0625],
    "norm_f": [1.25, 0.75],
}
HAND_TOKENS = [1, 2, 0, 2]


def hand_logits(p, tokens, falcon):
    """Logits at every position, written out scalar by scalar."""
    eps, meps = 1e-5, 1e-6

    def silu(v):
        return v / (1.0 + math.exp(-v))

    def softplus(v):
        return v if v > 20.0 else math.log1p(math.exp(v))

    emb = p["emb"]
    prev0, prev1 = 0.0, 0.0  # conv state: the previous pre-conv input of each channel
    s0, s1 = 0.0, 0.0  # ssm state [E=2][N=1]
    out = []
    for tok in tokens:
        u0, u1 = emb[tok]
        r = 1.0 / math.sqrt((u0 * u0 + u1 * u1) / 2.0 + eps)
        n0, n1 = u0 * r * p["norm"][0], u1 * r * p["norm"][1]
        W, b = p["in_w"], p["in_b"]
        x0 = W[0][0] * n0 + W[0][1] * n1 + b[0]
        x1 = W[1][0] * n0 + W[1][1] * n1 + b[1]
        z0 = W[2][0] * n0 + W[2][1] * n1 + b[2]
        z1 = W[3][0] * n0 + W[3][1] * n1 + b[3]
        cw, cb = p["conv_w"], p["conv_b"]
        c0 = cb[0] + cw[0][0] * prev0 + cw[0][1] * x0
        c1 = cb[1] + cw[1][0] * prev1 + cw[1][1] * x1
        prev0, prev1 = x0, x1
        a0, a1 = silu(c0), silu(c1)
        xw = p["x_w"]
        dlow = xw[0][0] * a0 + xw[0][1] * a1
        Bv = xw[1][0] * a0 + xw[1][1] * a1
        Cv = xw[2][0] * a0 + xw[2][1] * a1
        if falcon:  # weightless RMSNorm of 1-element vectors
            dlow = dlow / math.sqrt(dlow * dlow + meps)
            Bv = Bv / math.sqrt(Bv * Bv + meps)
            Cv = Cv / math.sqrt(Cv * Cv + meps)
        dt0 = softplus(p["dt_w"][0][0] * dlow + p["dt_b"][0])
        dt1 = softplus(p["dt_w"][1][0] * dlow + p["dt_b"][1])
        A0, A1 = -math.exp(p["A_log"][0][0]), -math.exp(p["A_log"][1][0])
        s0 = math.exp(dt0 * A0) * s0 + dt0 * a0 * Bv
        s1 = math.exp(dt1 * A1) * s1 + dt1 * a1 * Bv
        y0 = (s0 * Cv + p["D"][0] * a0) * silu(z0)
        y1 = (s1 * Cv + p["D"][1] * a1) * silu(z1)
        ow, ob = p["out_w"], p["out_b"]
        h0 = u0 + ow[0][0] * y0 + ow[0][1] * y1 + ob[0]
        h1 = u1 + ow[1][0] * y0 + ow[1][1] * y1 + ob[1]
        rf = 1.0 / math.sqrt((h0 * h0 + h1 * h1) / 2.0 + eps)
        f0, f1 = h0 * rf * p["norm_f"][0], h1 * rf * p["norm_f"][1]
        out.append([emb[v][0] * f0 + emb[v][1] * f1 for v in range(3)])  # tied lm_head
    return out


def hand_checkpoint(model_type):
    p = HAND
    m = "backbone.layers.0.mixer."
    t = {
        "backbone.embeddings.weight": np.array(p["emb"]),
        "backbone.layers.0.norm.weight": np.array(p["norm"]),
        m + "in_proj.weight": np.array(p["in_w"]),
        m + "in_proj.bias": np.array(p["in_b"]),
        m + "conv1d.weight": np.array(p["conv_w"]).reshape(2, 1, 2),
        m + "conv1d.bias": np.array(p["conv_b"]),
        m + "x_proj.weight": np.array(p["x_w"]),
        m + "dt_proj.weight": np.array(p["dt_w"]),
        m + "dt_proj.bias": np.array(p["dt_b"]),
        m + "A_log": np.array(p["A_log"]),
        m + "D": np.array(p["D"]),
        m + "out_proj.weight": np.array(p["out_w"]),
        m + "out_proj.bias": np.array(p["out_b"]),
        "backbone.norm_f.weight": np.array(p["norm_f"]),
    }
    cfg = {"model_type": model_type, "hidden_size": 2, "num_hidden_layers": 1, "state_size": 1,
           "conv_kernel": 2, "vocab_size": 3, "layer_norm_epsilon": 1e-5, "use_bias": True,
           "use_conv_bias": True, "tie_word_embeddings": True}
    path = tmpdir("e_" + model_type)
    # Every value above is a short dyadic fraction, so f32 storage holds it exactly.
    random_checkpoint.write_checkpoint(path, cfg, t, "f32")
    return path


@check
def hand_computed_mamba():
    model = mamba_ref.MambaRef.from_dir(hand_checkpoint("mamba"))
    want = hand_logits(HAND, HAND_TOKENS, falcon=False)
    got, _ = model.forward(HAND_TOKENS)
    assert_close(got, want, 1e-12, "mamba parallel vs hand")
    state = model.init_state()
    assert_close([model.step(t, state) for t in HAND_TOKENS], want, 1e-12, "mamba steps vs hand")


@check
def hand_computed_falcon():
    model = mamba_ref.MambaRef.from_dir(hand_checkpoint("falcon_mamba"))
    want = hand_logits(HAND, HAND_TOKENS, falcon=True)
    got, _ = model.forward(HAND_TOKENS)
    assert_close(got, want, 1e-12, "falcon parallel vs hand")
    other = hand_logits(HAND, HAND_TOKENS, falcon=False)
    assert np.max(np.abs(np.array(want) - np.array(other))) > 1e-3


# ---------------------------------------------------------------------------
# small pieces and the CLI
# ---------------------------------------------------------------------------

@check
def softplus_threshold():
    x = np.array([-30.0, -1.0, 0.0, 19.5, 20.0, 20.5, 40.0])
    got = mamba_ref.softplus(x)
    want = [math.log1p(math.exp(v)) if v <= 20 else v for v in x]
    assert_close(got, want, 1e-14, "softplus")


@check
def greedy_ties_go_to_lowest_id():
    class Fake(mamba_ref.MambaRef):
        def __init__(self):
            self.V = 5

        def prefill(self, tokens, mode="sequential"):
            return np.array([1.0, 3.0, 0.5, 3.0, 2.0]), None

        def step(self, token, state, compute_logits=True):
            return np.array([4.0, 0.0, 4.0, 4.0, -1.0])

    r = Fake().generate([0], 3)
    assert r["generated"] == [1, 0, 0], r["generated"]
    assert r["top2_gap"] == [0.0, 0.0, 0.0]


@check
def cli_writes_expected_json():
    path, _, _ = make_dir("cli", seed=15, model_type="falcon_mamba")
    out = os.path.join(TMP, "cli.json")
    rc = mamba_ref.main(["--model", path, "--tokens", "3,17,0,39", "--generate", "7", "--json", out])
    assert rc == 0
    with open(out) as f:
        d = json.load(f)
    model = mamba_ref.MambaRef.from_dir(path)
    ref = model.generate([3, 17, 0, 39], 7)
    assert len(d["last_logits"]) == model.V and d["generated"] == ref["generated"]
    assert_close(d["last_logits"], ref["last_logits"], 0, "JSON round trip")


def main():
    global TMP
    TMP = tempfile.mkdtemp(prefix="mamba_ref_selfcheck_")
    passed = failed = 0
    t0 = time.time()
    try:
        for fn in CHECKS:
            try:
                fn()
            except Exception:  # report and continue with the next check
                failed += 1
                print("FAIL %s" % fn.__name__)
                traceback.print_exc(file=sys.stdout)
            else:
                passed += 1
                print("ok   %s" % fn.__name__)
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    print("(%.1fs)" % (time.time() - t0))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
