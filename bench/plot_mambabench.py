#!/usr/bin/python3
"""Plots a mambabench JSON result (Debian's python3-matplotlib, run with /usr/bin/python3):
  PREFIX_throughput.png   output tokens/s vs streams in flight (server, and in process if measured)
  PREFIX_latency_cdf.png  TTFT and inter-token latency CDFs, one curve per level
  PREFIX_multi_turn.png   TTFT by turn: sessions vs resending the whole history

  /usr/bin/python3 bench/plot_mambabench.py bench/results/mambabench_130m.json
"""
import json
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def cdf(ax, samples, label):
    if not samples:
        return
    n = len(samples)
    ax.plot(samples, [(i + 1) / n for i in range(n)], label=label)


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    path = pathlib.Path(sys.argv[1])
    result = json.loads(path.read_text())
    prefix = path.with_suffix("")
    written = []

    levels = [lv for lv in result.get("levels", []) if lv["kind"] == "closed_loop"]
    if levels:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([lv["level"] for lv in levels], [lv["output_tokens_per_s"] for lv in levels], "o-",
                label="through the server (gRPC)")
        engine = result.get("in_process_levels", [])
        if engine:
            ax.plot([lv["level"] for lv in engine], [lv["output_tokens_per_s"] for lv in engine], "s--",
                    label="Engine in process")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("streams in flight")
        ax.set_ylabel("output tokens/s")
        ax.set_title(f"Throughput ({result['prompt_tokens']} prompt, {result['output_tokens']} output tokens)")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        out = f"{prefix}_throughput.png"
        fig.savefig(out, dpi=110)
        written.append(out)

    all_levels = result.get("levels", [])
    if all_levels:
        fig, (ttft, itl) = plt.subplots(1, 2, figsize=(10, 4))
        for lv in all_levels:
            label = f"{lv['level']:g} streams" if lv["kind"] == "closed_loop" else f"{lv['level']:g} req/s"
            cdf(ttft, lv["ttft_samples_ms"], label)
            cdf(itl, lv["inter_token_samples_ms"], label)
        for ax, title in ((ttft, "time to first token"), (itl, "inter-token latency")):
            ax.set_xscale("log")
            ax.set_xlabel("ms")
            ax.set_ylabel("fraction of requests" if ax is ttft else "fraction of tokens")
            ax.set_title(title)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        out = f"{prefix}_latency_cdf.png"
        fig.savefig(out, dpi=110)
        written.append(out)

    multi = result.get("multi_turn")
    if multi:
        fig, ax = plt.subplots(figsize=(6, 4))
        for mode, label in (("session", "session: only the new turn is sent"),
                            ("resend_history", "no session: the whole history is resent")):
            turns = multi[mode]["turns"]
            ax.plot([t["history_tokens_mean"] for t in turns], [t["ttft"]["p50_ms"] for t in turns], "o-",
                    label=label)
        ax.set_xlabel("conversation length at the turn (tokens)")
        ax.set_ylabel("TTFT p50 (ms)")
        ax.set_title("Time to first token of turn N")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        out = f"{prefix}_multi_turn.png"
        fig.savefig(out, dpi=110)
        written.append(out)
    print("\n".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
