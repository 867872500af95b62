#!/usr/bin/env python3
"""Roofline model of the CUDA engine's forward step, kernel by kernel, from the model's shapes.

For each kernel the CUDA backend launches per layer (engine/backend/cuda/cuda_backend.cc: residual
RMSNorm, in_proj, causal conv, x_proj, the B/C/dt norm, dt_proj, selective scan, out_proj; in
decode passes of up to 8 rows the conv runs inside in_proj and the norm inside dt_proj and the
scan) and per step (embedding, final norm, lm_head, logits to the host), it counts the bytes moved
through device memory and the floating-point operations, and estimates the kernel's time as the
larger of bytes / bandwidth and FLOPs / peak rate (for the selective scan, which runs on the CUDA
cores rather than the tensor cores, its instructions / their issue rate), plus a fixed cost per
kernel (launch and tail,
which CUDA graphs shrink but do not remove). Summed, that gives the best step time this design can
reach, so each measurement of bench/cuda_bench (its JSON, --measured) can be printed beside its
estimate.

What it assumes, as the backend does: activations in fp32; GEMM inputs in the weight dtype (a copy
written by the producing kernel, for every pass size); the conv and SSM state in fp32,
read and written once per decode step; A = -exp(A_log) precomputed in fp32; logits in fp32, copied
to the host when the step returns them. Prefill reads each layer's weights once per step and keeps
the scan state on chip. Device figures default to the H200 as measured on the machines this
project uses (a device-to-device copy moving 4.3 TB/s, bf16 GEMMs at about 790 TFLOP/s); pass the
device's own with --bandwidth-gbps / --peak-tflops, e.g. cuda_bench's device_copy_gbps.

    /usr/bin/python3 bench/roofline.py [--config config.json | --preset falcon-mamba-7b]
        [--dtype bf16] [--batches 1,8,64,256] [--prefill-tokens 2048]
        [--measured bench/results/gpu/cuda.json] [--json bench/results/roofline.json]

Standard library only (Debian's /usr/bin/python3 or any other).
"""
import argparse
import json
import sys

PRESETS = {
    # Falcon-Mamba-7B's config.json (tiiuae/falcon-mamba-7b).
    "falcon-mamba-7b": {"model_type": "falcon_mamba", "hidden_size": 4096, "num_hidden_layers": 64,
                        "intermediate_size": 8192, "state_size": 16, "conv_kernel": 4,
                        "time_step_rank": 256, "vocab_size": 65024, "tie_word_embeddings": False,
                        "use_bias": False, "use_conv_bias": True},
    # state-spaces/mamba-130m-hf.
    "mamba-130m": {"model_type": "mamba", "hidden_size": 768, "num_hidden_layers": 24,
                   "intermediate_size": 1536, "state_size": 16, "conv_kernel": 4, "time_step_rank": 48,
                   "vocab_size": 50280, "tie_word_embeddings": True, "use_bias": False,
                   "use_conv_bias": True},
}
DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2}
F32 = 4


class Shapes:
    def __init__(self, config):
        self.D = config["hidden_size"]
        self.L = config["num_hidden_layers"]
        self.E = config.get("intermediate_size") or 2 * self.D
        self.N = config["state_size"]
        self.K = config["conv_kernel"]
        rank = config.get("time_step_rank", "auto")
        self.R = -(-self.D // 16) if rank in (None, "auto") else rank
        self.V = config["vocab_size"]
        self.tied = config.get("tie_word_embeddings", True)
        self.bias = config.get("use_bias", False)
        self.conv_bias = config.get("use_conv_bias", True)
        self.falcon = config.get("model_type") == "falcon_mamba"

    def tensors(self):
        """Every tensor of the checkpoint and its element count (the Hugging Face layout)."""
        D, E, N, K, R, V = self.D, self.E, self.N, self.K, self.R, self.V
        out = {"backbone.embeddings.weight": V * D, "backbone.norm_f.weight": D}
        if not self.tied:
            out["lm_head.weight"] = V * D
        for i in range(self.L):
            p = f"backbone.layers.{i}."
            out[p + "norm.weight"] = D
            out[p + "mixer.in_proj.weight"] = 2 * E * D
            out[p + "mixer.conv1d.weight"] = E * K
            out[p + "mixer.x_proj.weight"] = (R + 2 * N) * E
            out[p + "mixer.dt_proj.weight"] = E * R
            out[p + "mixer.dt_proj.bias"] = E
            out[p + "mixer.A_log"] = E * N
            out[p + "mixer.D"] = E
            out[p + "mixer.out_proj.weight"] = D * E
            if self.conv_bias:
                out[p + "mixer.conv1d.bias"] = E
            if self.bias:
                out[p + "mixer.in_proj.bias"] = 2 * E
                out[p + "mixer.out_proj.bias"] = D
        return out

    def state_bytes(self):
        return F32 * self.L * self.E * (self.K - 1 + self.N)


# kernels/skinny_gemm.h: GEMMs of up to this many rows use the skinny GEMM, which in a decode
# pass also runs the causal conv on in_proj's output.
SKINNY_GEMM_MAX_ROWS = 8

# The selective scan is not a GEMM: its arithmetic runs on the CUDA cores, one instruction per
# scheduler per clock, and at prefill that, not memory, bounds it. Instructions per (token,
# channel, state) triple, counted in the kernels' PTX for sm_90 at d_state 16 (non-move
# instructions of one pass of the kernel body over the triples it covers, its per-tile staging,
# gates and stores included): the chunked parallel scan that prefill chunks of at least
# CHUNKED_SCAN_MIN_TOKENS take (kernels/selective_scan.h), the token-sequential kernel of shorter
# chunks (its h.C a shuffle sum over 16 lanes), and the decode update.
CHUNKED_SCAN_MIN_TOKENS = 128
SCAN_INSTRUCTIONS = {"chunked": 24, "sequential": 43, "update": 26}


def scan_instructions(s, rows, tokens_per_row, prefill_scan=None):
    """Instructions the selective scan issues on the CUDA cores in one step, all layers;
    `prefill_scan` names a prefill kernel to use whatever the length."""
    if tokens_per_row == 1:
        kind = "update"
    elif prefill_scan:
        kind = prefill_scan
    else:
        kind = "chunked" if tokens_per_row >= CHUNKED_SCAN_MIN_TOKENS else "sequential"
    return s.L * rows * s.E * s.N * SCAN_INSTRUCTIONS[kind]


def kernels(s, w, rows, tokens_per_row, logits_to_host):
    """(name, bytes, flops, launches) of one forward step over `rows` rows; each row is one token
    at decode (tokens_per_row 1) or one prompt token at prefill."""
    D, E, N, K, R, V, L = s.D, s.E, s.N, s.K, s.R, s.V, s.L
    g = w  # GEMM input activations: in the weight dtype, whatever the pass size
    decode = tokens_per_row == 1
    seqs = rows if decode else 1
    state_rw = 2 * seqs  # every sequence's state, read and written once per step
    out = [("embedding", rows * D * w + rows * D * F32, 0, 1)]
    # The conv: its weights, its output (fp32 and the GEMM copy), the state; and its input, unless
    # a decode pass small enough for the skinny GEMM runs it inside in_proj (one launch, and the
    # input never goes through memory). Such a pass also fuses the B/C/dt norm away (below).
    fused_decode = decode and rows <= SKINNY_GEMM_MAX_ROWS
    conv_bytes = (E * K * w + rows * E * (F32 + (0 if g == F32 else g))
                  + state_rw * E * (K - 1) * F32)
    conv_flops = 2 * rows * E * K
    in_proj_bytes = 2 * E * D * w + rows * D * g + rows * 2 * E * F32
    in_proj_flops = 2 * rows * D * 2 * E
    if fused_decode:
        in_proj = ("in_proj+conv", in_proj_bytes - rows * E * F32 + conv_bytes,
                   in_proj_flops + conv_flops, 1)
        conv = ("causal_conv1d", 0, 0, 0)
    else:
        in_proj = ("in_proj", in_proj_bytes, in_proj_flops, 1)
        conv = ("causal_conv1d", conv_bytes + rows * E * F32, conv_flops, 1)
    layer = [
        ("residual_rms_norm", D * w + rows * D * (3 * F32 + g), 5 * rows * D, 1),
        in_proj,
        conv,
        ("x_proj", (R + 2 * N) * E * w + rows * E * g + rows * (R + 2 * N) * F32,
         2 * rows * E * (R + 2 * N), 1),
        # A decode pass small enough for the skinny GEMM leaves the norm to dt_proj (which reads
        # dt_low in fp32) and the state update (B and C): no launch of its own.
        ("bcdt_rms_norm", rows * (R + 2 * N) * 2 * F32 + rows * R * g, 6 * rows * (R + 2 * N),
         1 if (s.falcon or g != F32) and not fused_decode else 0),
        ("dt_proj", E * R * w + rows * R * (F32 if fused_decode else g) + rows * E * F32,
         2 * rows * R * E, 1),
        # x, dt, z and y per row; B and C per row; A (fp32), D, dt_bias; the state.
        ("selective_scan", rows * E * (3 * F32 + g) + rows * 2 * N * F32 + E * N * F32
         + 2 * E * w + state_rw * E * N * F32, rows * E * (7 * N + 10), 1),
        ("out_proj", D * E * w + rows * E * g + rows * D * F32, 2 * rows * E * D, 1),
    ]
    for name, nbytes, flops, launches in layer:
        out.append((name, L * nbytes, L * flops, L * launches))
    out.append(("final_norm", D * w + rows * D * (3 * F32 + g), 5 * rows * D, 1))
    head_rows = seqs  # logits only for each sequence's last token
    out.append(("lm_head", V * D * w + head_rows * D * g + head_rows * V * F32,
                2 * head_rows * D * V, 1))
    if logits_to_host:
        out.append(("logits_to_host", head_rows * V * F32, 0, 1))
    else:
        out.append(("argmax", head_rows * V * F32, head_rows * V, 1))
    return out


def estimate(s, w, rows, tokens_per_row, logits_to_host, device, prefill_scan=None):
    bw = device["bandwidth_gbps"] * 1e9
    peak = device["peak_tflops"] * 1e12
    pcie = device["host_copy_gbps"] * 1e9
    rows_out, total_s, total_bytes, total_flops = [], 0.0, 0, 0
    for name, nbytes, flops, launches in kernels(s, w, rows, tokens_per_row, logits_to_host):
        if launches == 0:
            continue
        memory_s = nbytes / (pcie if name == "logits_to_host" else bw)
        compute_s = flops / peak
        core_s = 0.0
        if name == "selective_scan":
            core_s = (scan_instructions(s, rows, tokens_per_row, prefill_scan)
                      / (device["core_tinstr_per_s"] * 1e12))
        seconds = max(memory_s, compute_s, core_s) + launches * device["kernel_overhead_us"] * 1e-6
        bound = "memory" if memory_s >= max(compute_s, core_s) else (
            "cuda-core" if core_s > compute_s else "compute")
        rows_out.append({"kernel": name, "launches": launches, "bytes": nbytes, "flops": flops,
                         "bound": bound, "estimated_us": seconds * 1e6})
        total_s += seconds
        total_bytes += nbytes
        total_flops += flops
    tokens = rows if tokens_per_row == 1 else tokens_per_row
    return {"kernels": rows_out, "step_bytes": total_bytes, "step_flops": total_flops,
            "estimated_step_ms": total_s * 1e3, "estimated_tokens_per_s": tokens / total_s,
            # Without the per-kernel cost: the pure bandwidth/compute roofline.
            "roofline_tokens_per_s": tokens / max(total_bytes / bw, total_flops / peak)}


def measured_figures(path):
    with open(path) as f:
        m = json.load(f)
    decode = {row["batch"]: row for row in m.get("decode", [])}
    return decode, m.get("prefill", {}), m.get("device", {})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="a checkpoint's config.json")
    ap.add_argument("--preset", default="falcon-mamba-7b", choices=sorted(PRESETS))
    ap.add_argument("--dtype", default="bf16", choices=sorted(DTYPE_BYTES))
    ap.add_argument("--batches", default="1,8,64,256")
    ap.add_argument("--prefill-tokens", type=int, default=2048)
    ap.add_argument("--bandwidth-gbps", type=float, default=4300.0,
                    help="device memory bandwidth (default: an H200's measured copy rate)")
    ap.add_argument("--peak-tflops", type=float, default=790.0,
                    help="dense GEMM rate in the weight dtype (default: an H200's measured bf16)")
    ap.add_argument("--host-copy-gbps", type=float, default=50.0, help="device to host copies")
    ap.add_argument("--core-tinstr-per-s", type=float, default=33.4,
                    help="instructions per second on the CUDA cores, in 1e12 thread-instructions "
                         "(default: an H200's 132 SMs x 128 lanes x 1.98 GHz)")
    ap.add_argument("--kernel-overhead-us", type=float, default=2.0,
                    help="fixed cost per kernel launch inside a CUDA graph")
    ap.add_argument("--measured", help="bench/cuda_bench's JSON, printed beside the estimates")
    ap.add_argument("--json", help="write the model (and the measurements) here")
    ap.add_argument("--weights-only", action="store_true",
                    help="print the checkpoint's weight bytes for --dtype and exit")
    args = ap.parse_args()

    config = PRESETS[args.preset]
    if args.config:
        with open(args.config) as f:
            config = json.load(f)
    s, w = Shapes(config), DTYPE_BYTES[args.dtype]
    params = sum(s.tensors().values())
    if args.weights_only:
        print(params * w)
        return 0
    device = {"bandwidth_gbps": args.bandwidth_gbps, "peak_tflops": args.peak_tflops,
              "core_tinstr_per_s": args.core_tinstr_per_s, "host_copy_gbps": args.host_copy_gbps,
              "kernel_overhead_us": args.kernel_overhead_us}
    decode_measured, prefill_measured = {}, {}
    if args.measured:
        decode_measured, prefill_measured, _ = measured_figures(args.measured)

    print(f"model: {args.config or args.preset}, {params / 1e9:.3f} B parameters, "
          f"{params * w / 2**30:.2f} GiB of {args.dtype} weights, state {s.state_bytes() / 2**20:.1f} "
          f"MiB per sequence; device: {args.bandwidth_gbps:.0f} GB/s, {args.peak_tflops:.0f} TFLOP/s, "
          f"{args.kernel_overhead_us} us per kernel")
    result = {"model": args.config or args.preset, "dtype": args.dtype, "parameters": params,
              "weight_bytes": params * w, "state_bytes_per_sequence": s.state_bytes(),
              "device": device, "decode": [], "prefill": None}
    print(f"{'decode batch':>12} {'roofline tok/s':>15} {'estimate tok/s':>15} {'greedy est.':>12}"
          f" {'measured':>10} {'greedy meas.':>12} {'meas/est':>9}")
    for batch in (int(b) for b in args.batches.split(",")):
        with_logits = estimate(s, w, batch, 1, True, device)
        greedy = estimate(s, w, batch, 1, False, device)
        row = {"batch": batch, "with_logits": with_logits, "greedy_token_only": greedy}
        meas = decode_measured.get(batch, {})
        measured, measured_greedy = meas.get("tokens_per_s"), meas.get("greedy_token_only_tokens_per_s")
        if measured:
            row["measured_tokens_per_s"] = measured
            row["measured_greedy_tokens_per_s"] = measured_greedy
        ratio = f"{measured / with_logits['estimated_tokens_per_s']:.2f}" if measured else "-"
        print(f"{batch:>12} {with_logits['roofline_tokens_per_s']:>15.0f} "
              f"{with_logits['estimated_tokens_per_s']:>15.0f} {greedy['estimated_tokens_per_s']:>12.0f} "
              f"{measured or '-':>10} {measured_greedy or '-':>12} {ratio:>9}")
        result["decode"].append(row)
    prefill = estimate(s, w, args.prefill_tokens, args.prefill_tokens, True, device)
    sequential = estimate(s, w, args.prefill_tokens, args.prefill_tokens, True, device,
                          prefill_scan="sequential")
    result["prefill"] = {"tokens": args.prefill_tokens, **prefill,
                         "token_sequential_scan_estimated_tokens_per_s":
                             sequential["estimated_tokens_per_s"]}
    measured = prefill_measured.get("tokens_per_s")
    if measured:
        result["prefill"]["measured_tokens_per_s"] = measured
    print(f"prefill {args.prefill_tokens} tokens: roofline {prefill['roofline_tokens_per_s']:.0f} tok/s,"
          f" estimate {prefill['estimated_tokens_per_s']:.0f} tok/s (with the token-sequential scan"
          f" {sequential['estimated_tokens_per_s']:.0f}), measured {measured or '-'}")
    batch1 = result["decode"][0]["with_logits"] if result["decode"] else None
    if batch1:
        print("where a batch-%d decode step goes:" % result["decode"][0]["batch"])
        for k in sorted(batch1["kernels"], key=lambda k: -k["estimated_us"]):
            print(f"  {k['kernel']:<18} {k['estimated_us']:9.1f} us  {k['bytes'] / 1e6:10.2f} MB "
                  f"{k['flops'] / 1e9:9.2f} GFLOP  {k['launches']:4d} launches  {k['bound']}-bound")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
