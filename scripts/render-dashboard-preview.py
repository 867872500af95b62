#!/usr/bin/python3
"""Renders deploy/grafana/dashboard-preview.png: the Grafana dashboard's panels, drawn with matplotlib from a
real Prometheus's query_range results while the synthetic-traffic exporter runs (about 3 minutes).

    scripts/render-dashboard-preview.py [--exporter build/cpu/tests/server/metrics/metrics_test_exporter]
                                        [--out deploy/grafana/dashboard-preview.png] [--requests N]

Needs the `prometheus` and `python3-matplotlib` Debian packages (scripts/install-deps.sh). Not part
of CI: it is slow on purpose (rates need a minute of history to look like production).
"""
import argparse
import json
import pathlib
import re
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests/server/metrics"))
import prom_stack  # noqa: E402

import matplotlib  # noqa: E402
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

UNIT_FORMAT = {
    "bytes": lambda v: next(f"{v / d:.3g} {u}" for d, u in
                            ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"), (1, "B"))
                            if abs(v) >= d or d == 1),
    "Bps": lambda v: UNIT_FORMAT["bytes"](v) + "/s",
    "s": lambda v: f"{v * 1000:.3g} ms" if abs(v) < 1 else f"{v:.3g} s",
    "percentunit": lambda v: f"{v * 100:.0f}%",
    "reqps": lambda v: f"{v:.3g}/s",
    "short": lambda v: f"{v / 1e6:.3g}M" if abs(v) >= 1e6 else (
        f"{v / 1e3:.3g}k" if abs(v) >= 1e3 else f"{v:.3g}"),
}


def legend_of(fmt, metric):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt) or str(metric)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exporter", default=str(REPO / "build/cpu/tests/server/metrics/metrics_test_exporter"))
    parser.add_argument("--out", default=str(REPO / "deploy/grafana/dashboard-preview.png"))
    parser.add_argument("--requests", type=int, default=2400)
    parser.add_argument("--tail-seconds", type=float, default=30)
    args = parser.parse_args()

    dashboard = json.loads((REPO / "deploy/grafana/mambaserve-dashboard.json").read_text())
    stack = prom_stack.Stack([args.exporter, "--model-name", "falcon-mamba-7b", "--requests",
                              str(args.requests), "--concurrency", "12", "--token-ms", "10",
                              "--ramp-seconds", "60"])
    stack.exporter_cmd += ["--start-file", str(stack.dir / "start"),
                           "--summary", str(stack.dir / "summary.json")]
    with stack:
        prom_stack.wait_for(lambda: stack.value('up{job="mambaserve"}') == 1, 20, "first scrape")
        time.sleep(5)
        start = time.time()
        (stack.dir / "start").touch()
        print("traffic running ...", flush=True)
        prom_stack.wait_for(lambda: (stack.dir / "summary.json").exists(), 600, "traffic", 1)
        print(f"traffic done after {time.time() - start:.0f}s; recording the tail", flush=True)
        time.sleep(args.tail_seconds)
        end = time.time()
        panels = []
        for panel in dashboard["panels"]:
            if panel["type"] != "timeseries":
                continue
            series = []
            for target in panel["targets"]:
                expr = target["expr"].replace("$model_name", ".+")
                for result in stack.query_range(expr, start - 5, end, 1):
                    xs = [float(t) - start for t, _ in result["values"]]
                    ys = [float(v) for _, v in result["values"]]
                    series.append((legend_of(target["legendFormat"], result["metric"]), xs, ys))
            panels.append((panel, series))

    cols = 3
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 6.4, rows * 3.5), squeeze=False)
    fig.suptitle("mambaserve dashboard: synthetic traffic ramping to 12 concurrent clients on 8 "
                 "state slots, scraped by Prometheus every 1 s", fontsize=15, y=0.995)
    for ax, (panel, series) in zip(axes.flat, panels):
        unit = panel["fieldConfig"]["defaults"]["unit"]
        right = None
        for override in panel["fieldConfig"]["overrides"]:
            pattern = override["matcher"]["options"]
            right_unit = next(p["value"] for p in override["properties"] if p["id"] == "unit")
            right = (re.compile(pattern), right_unit)
        stacked = panel["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
        ax2 = ax.twinx() if right else None
        lines = []
        if stacked and series:
            # Series may start at different times: align on the union of timestamps, 0 if absent.
            xs = sorted({x for _, sx, _ in series for x in sx})
            aligned = [[dict(zip(sx, sy)).get(x, 0.0) for x in xs] for _, sx, sy in series]
            ax.stackplot(xs, *aligned, labels=[name for name, _, _ in series], alpha=0.75)
        else:
            for name, xs, ys in series:
                target_ax = ax2 if right and right[0].match(name) else ax
                style = "--" if target_ax is ax2 else "-"
                lines += target_ax.plot(xs, ys, style, label=name, linewidth=1.8)
        ax.set_title(panel["title"], fontsize=11, loc="left")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _, u=unit: UNIT_FORMAT[u](v)))
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.set_xlabel("seconds since traffic start", fontsize=8)
        ax.tick_params(labelsize=8)
        if ax2:
            ax2.yaxis.set_major_formatter(FuncFormatter(lambda v, _, u=right[1]: UNIT_FORMAT[u](v)))
            top = max((max(ys) for name, _, ys in series if right[0].match(name)), default=1)
            ax2.set_ylim(0, top * 2.2)  # flat lines sit mid-panel, clear of the token curve
            ax2.tick_params(labelsize=8)
            ax.legend(lines, [l.get_label() for l in lines], fontsize=7.5, loc="upper left")
        elif series:
            ax.legend(fontsize=7.5, loc="upper left", ncol=2 if len(series) > 3 else 1)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
