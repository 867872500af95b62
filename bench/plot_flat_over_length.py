#!/usr/bin/python3
"""Plots flat_over_length_bench results and mambabench's long streams through a server (Debian's
python3-matplotlib, run with /usr/bin/python3):
resident memory and time per token against tokens generated, one line per result file, in one
PNG next to the first file (or --out).

  /usr/bin/python3 bench/plot_flat_over_length.py bench/results/flat_over_length_130m_1stream.json
"""
import argparse
import json
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("results", nargs="+")
    parser.add_argument("--out")
    args = parser.parse_args()
    fig, (memory, speed) = plt.subplots(1, 2, figsize=(11, 4))
    top = 0
    for path in args.results:
        r = json.loads(pathlib.Path(path).read_text())
        tokens = [s["tokens"] for s in r["samples"]]
        # mambabench's long streams against a server on another machine carry no memory samples.
        has_rss = "rss_growth" in r
        rss_text = f"RSS {100 * r['rss_growth']:+.2f}%, " if has_rss else ""
        label = (f"{r['preset']}, {r['streams']} stream{'s' if r['streams'] > 1 else ''}: "
                 f"{rss_text}per token {100 * r['per_token_drift']:+.1f}%")
        if has_rss:
            rss = [s["rss_bytes"] / 2**20 for s in r["samples"]]
            top = max(top, max(rss))
            memory.plot(tokens, rss, "o-", ms=3, label=label)
        speed.plot(tokens, [s["ms_per_token"] for s in r["samples"]], "o-", ms=3, label=label)
    memory.set_ylim(0, 1.2 * top if top else 1)
    speed.set_ylim(bottom=0)
    for ax, title, unit in ((memory, "resident memory (the Engine's or server's process)", "MiB"),
                            (speed, "time per token (per step with several streams)", "ms")):
        ax.set_title(title)
        ax.set_xlabel("tokens generated (per stream)")
        ax.set_ylabel(unit)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out = args.out or str(pathlib.Path(args.results[0]).with_suffix("")) + ".png"
    fig.savefig(out, dpi=110)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
