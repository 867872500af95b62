#!/usr/bin/env python3
"""mambaserve against Hugging Face transformers' own Mamba and FalconMamba on the same checkpoints.

For each case it writes a random checkpoint with `mambaserve make-model` (the Hugging Face layout:
config.json, model.safetensors), loads it with transformers' MambaForCausalLM or
FalconMambaForCausalLM through from_pretrained (so HF's config parsing and weight names are the
judge of the layout), runs one prompt, and compares the last position's logits and the greedy
continuation with `mambaserve eval` on each requested backend. The transformers model runs in
float32 on the GPU when there is one (TF32 off), else on the CPU.

Cases: the tiny shape as Mamba and FalconMamba in f32 (tokens must agree), and Falcon-Mamba-7B's
shapes (d_model 4096, 65k vocabulary) with 2 of its 64 layers in bf16, where mambaserve rounds every
GEMM's activations to bf16 and transformers (float32) does not: its bound is relative to the logits'
spread.

Needs PyTorch >= 2 and transformers (what the GPU machines have); without them it says so and exits
77 (skipped). Usage:
    python3 tests/reference/compare_transformers.py --mambaserve build/bin/mambaserve \\
        --workdir /tmp/hf-compare [--backend cuda --backend cpu] [--json OUT]
"""

import argparse
import json
import os
import sys

SKIPPED = 77
TIMEOUT_S = 900
PROMPT = [5, 17, 42, 7, 300, 11, 2, 99, 64, 1, 250, 3]
GENERATE = 16

# name, preset, model type, dtype, extra make-model flags, tolerance, relative?
CASES = [
    ("tiny-mamba-f32", "tiny", "mamba", "f32", [], 1e-3, False),
    ("tiny-falcon-f32", "tiny", "falcon_mamba", "f32", ["--use-bias"], 1e-3, False),
    ("7b-shapes-falcon-bf16-2layers", "7b", "falcon_mamba", "bf16", ["--layers", "2"], 2e-2, True),
]


def transformers_outputs(torch, transformers, model_dir, model_type, device):
    """Last-position logits (float64 list) and greedy ids from transformers' own model."""
    cls = (transformers.FalconMambaForCausalLM if model_type == "falcon_mamba"
           else transformers.MambaForCausalLM)
    model = cls.from_pretrained(model_dir, torch_dtype=torch.float32).to(device).eval()
    ids = torch.tensor([PROMPT], device=device)
    with torch.no_grad():
        logits = model(ids).logits[0, -1].double().cpu().tolist()
        out = model.generate(ids, max_new_tokens=GENERATE, do_sample=False, min_new_tokens=GENERATE)
    generated = out[0, len(PROMPT):].cpu().tolist()
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return logits, generated


def compare(name, ours, theirs, tol, relative, want_same_tokens):
    logits_a, logits_b = ours["last_logits"], theirs["last_logits"]
    diff = max(abs(a - b) for a, b in zip(logits_a, logits_b))
    spread = max(logits_b) - min(logits_b)
    bound = tol * spread if relative else tol
    same = ours["generated"] == theirs["generated"]
    passed = len(logits_a) == len(logits_b) and diff <= bound and (same or not want_same_tokens)
    return dict(case=name, backend=ours.get("backend"), max_abs_logit_diff=diff,
                logit_spread=spread, bound=bound, greedy_equal=same, passed=passed)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mambaserve", required=True, help="path to the mambaserve binary")
    ap.add_argument("--workdir", required=True, help="directory for checkpoints and outputs")
    ap.add_argument("--backend", action="append", choices=["cpu", "cuda"], default=[],
                    help="mambaserve backends to compare (repeatable; default cpu)")
    ap.add_argument("--json", help="write the verdicts here")
    args = ap.parse_args(argv)
    backends = args.backend or ["cpu"]

    try:
        import torch
        import transformers
        from transformers.utils import is_torch_available
    except ImportError as e:
        print("compare_transformers: skipped, no PyTorch + transformers here (%s)" % e)
        return SKIPPED
    if not is_torch_available():  # transformers refuses this PyTorch (too old)
        print("compare_transformers: skipped, transformers %s does not take PyTorch %s" % (
            transformers.__version__, torch.__version__))
        return SKIPPED
    import compare_engine  # after the check: it needs NumPy, which PyTorch brings
    run = compare_engine.run_cmd
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print("transformers %s, torch %s, reference on %s" % (transformers.__version__,
                                                            torch.__version__, device))

    os.makedirs(args.workdir, exist_ok=True)
    verdicts, ok = [], True
    for name, preset, model_type, dtype, extra, tol, relative in CASES:
        model_dir = os.path.join(args.workdir, name)
        run([args.mambaserve, "make-model", "--preset", preset, "--model-type", model_type,
             "--dtype", dtype, "--seed", "3", "--out", model_dir] + extra, TIMEOUT_S,
            "make-model " + name)
        logits, generated = transformers_outputs(torch, transformers, model_dir, model_type, device)
        theirs = dict(last_logits=logits, generated=generated)
        for backend in backends:
            out_json = os.path.join(args.workdir, "%s-%s.json" % (name, backend))
            seconds = run([args.mambaserve, "eval", "--model", model_dir, "--tokens",
                           ",".join(str(t) for t in PROMPT), "--generate", str(GENERATE),
                           "--backend", backend, "--json", out_json], TIMEOUT_S, "eval " + name)
            with open(out_json) as f:
                ours = json.load(f)
            ours.setdefault("backend", backend)
            v = compare(name, ours, theirs, tol, relative, want_same_tokens=dtype == "f32")
            v["eval_seconds"] = seconds
            ok &= v["passed"]
            verdicts.append(v)
            print("%s %-32s %-4s max|dlogit| %.3g (bound %.3g) greedy equal: %s" % (
                "PASS" if v["passed"] else "FAIL", name, backend, v["max_abs_logit_diff"],
                v["bound"], v["greedy_equal"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(verdicts, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
