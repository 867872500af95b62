#!/usr/bin/env python3
"""Writes mambaserve-dashboard.json (Grafana) from the panel list below.

Every query reads a recorded series from deploy/prometheus/recording_rules.yml, filtered by the
dashboard's $model_name variable, so the e2e test can check each one against a live Prometheus.
scripts/render-dashboard-preview.py draws the same panels with matplotlib.

    python3 deploy/grafana/make_dashboard.py           # rewrites mambaserve-dashboard.json
    python3 deploy/grafana/make_dashboard.py --check   # fails if the JSON is out of date
"""
import json
import pathlib
import sys

M = '{model_name=~"$model_name"}'


def sel(series, extra=""):
    """A recorded series filtered by the model variable, plus optional extra matchers."""
    return series + (M if not extra else M[:-1] + "," + extra + "}")


# (row title, [panels]); a panel: title, unit, width, [(expr, legend)], options.
ROWS = [
    ("Traffic", [
        dict(title="Token throughput (tokens/s)", unit="short", width=8, targets=[
            (sel("model_name:vllm_prompt_tokens:rate1m"), "prompt (in)"),
            (sel("model_name:vllm_generation_tokens:rate1m"), "generated (out)"),
        ]),
        dict(title="Finished requests by reason (req/s)", unit="reqps", width=8, stack=True, targets=[
            (sel("model_name:vllm_request_success:rate1m"), "{{finished_reason}}"),
        ]),
        dict(title="Running requests and queue depth", unit="short", width=8, targets=[
            (sel("model_name:vllm_num_requests_running:sum"), "running"),
            (sel("model_name:vllm_num_requests_waiting:sum"), "waiting (queue)"),
        ]),
    ]),
    ("Latency", [
        dict(title="Time to first token", unit="s", width=8, targets=[
            (sel("model_name:vllm_time_to_first_token_seconds:p50_1m"), "p50"),
            (sel("model_name:vllm_time_to_first_token_seconds:p95_1m"), "p95"),
            (sel("model_name:vllm_time_to_first_token_seconds:p99_1m"), "p99"),
        ]),
        dict(title="Inter-token latency", unit="s", width=8, targets=[
            (sel("model_name:vllm_inter_token_latency_seconds:p50_1m"), "p50"),
            (sel("model_name:vllm_inter_token_latency_seconds:p95_1m"), "p95"),
            (sel("model_name:vllm_inter_token_latency_seconds:p99_1m"), "p99"),
        ]),
        dict(title="Request latency and queue time (p95)", unit="s", width=8, targets=[
            (sel("model_name:vllm_e2e_request_latency_seconds:p95_1m"), "end to end"),
            (sel("model_name:vllm_request_queue_time_seconds:p95_1m"), "queued"),
        ]),
    ]),
    ("Scheduler", [
        dict(title="Batch size (sequences per step)", unit="short", width=8, targets=[
            (sel("model_name:mambaserve_scheduler_step_batch_size:mean_1m"), "mean"),
            (sel("model_name:mambaserve_scheduler_step_batch_size:p95_1m"), "p95"),
        ]),
        dict(title="Tokens per step and steps/s", unit="short", width=8, targets=[
            (sel("model_name:mambaserve_scheduler_step_tokens:mean_1m"), "tokens per step (mean)"),
            (sel("model_name:mambaserve_scheduler_steps:rate1m"), "steps/s"),
        ]),
        dict(title="Step duration (p95)", unit="s", width=8, targets=[
            (sel("model_name:mambaserve_scheduler_step_duration_seconds:p95_1m"), "p95"),
        ]),
    ]),
    ("SSM state: fixed-size per session, no KV cache", [
        dict(title="State memory stays flat while generated tokens climb", unit="short", width=12,
             right_axis=dict(match="bytes", unit="bytes"), targets=[
            (sel("model_name:vllm_generation_tokens:sum"), "generated tokens (cumulative)"),
            (sel("model_name:mambaserve_state_pool_bytes:sum"), "state pool bytes (reserved)"),
            (sel("model_name:mambaserve_state_memory_bytes:sum", 'location="device"'),
             "state bytes in use (device)"),
        ]),
        dict(title="State slot occupancy", unit="short", width=6, stack=True, targets=[
            (sel("model_name:mambaserve_state_slots:sum"), "{{state}}"),
        ]),
        dict(title="Slot usage (vllm:kv_cache_usage_perc)", unit="percentunit", width=6, targets=[
            (sel("model_name:vllm_kv_cache_usage_perc:max"), "max over replicas"),
        ]),
        dict(title="Sessions by state", unit="short", width=8, targets=[
            (sel("model_name:mambaserve_sessions:sum"), "live"),
            (sel("model_name:mambaserve_state_slots:sum", 'state="idle_resident"'),
             "idle, resident on device"),
            (sel("model_name:mambaserve_sessions_parked_on_host:sum"), "parked on host"),
        ]),
        dict(title="Session lifecycle events (per s)", unit="short", width=8, targets=[
            (sel("model_name:mambaserve_session_events:rate1m"), "{{event}}"),
        ]),
        dict(title="Session state memory by location", unit="bytes", width=8, targets=[
            (sel("model_name:mambaserve_state_memory_bytes:sum"), "{{location}}"),
        ]),
    ]),
    ("Session store (Redis, --session-store)", [
        dict(title="Store operations (per s)", unit="short", width=8, targets=[
            (sel("model_name:mambaserve_session_store_writes:rate1m"), "versions written"),
            (sel("model_name:mambaserve_session_store_loads:rate1m"), "sessions loaded"),
            (sel("model_name:mambaserve_session_store_lease_conflicts:rate1m"), "turns ABORTED (busy elsewhere)"),
            (sel("model_name:mambaserve_session_store_errors:rate1m"), "failures"),
        ]),
        dict(title="Bytes written to the store", unit="Bps", width=8, targets=[
            (sel("model_name:mambaserve_session_store_written_bytes:rate1m"), "written"),
        ]),
        dict(title="Sessions whose newest turn is not stored", unit="short", width=8, targets=[
            (sel("model_name:mambaserve_session_store_unstored_sessions:sum"), "unstored"),
        ]),
    ]),
    ("Memory", [
        dict(title="Device and host memory", unit="bytes", width=24, targets=[
            (sel("model_name:mambaserve_device_memory_used_bytes:sum"), "device used"),
            (sel("model_name:mambaserve_device_memory_total_bytes:sum"), "device total"),
            (sel("model_name:process_resident_memory_bytes:sum"), "process resident (host)"),
        ]),
    ]),
    ("Errors", [
        dict(title="gRPC calls by code (per s)", unit="reqps", width=8, stack=True, targets=[
            (f'sum by (code) ({sel("model_name:mambaserve_grpc_requests:rate1m")})', "{{code}}"),
        ]),
        dict(title="Server error ratio", unit="percentunit", width=8, targets=[
            (sel("model_name:mambaserve_grpc_errors:ratio_rate1m"), "errors / calls"),
        ]),
        dict(title="Admission rejections by reason (per s)", unit="reqps", width=8, targets=[
            (sel("model_name:mambaserve_admission_rejections:rate1m"), "{{reason}}"),
        ]),
    ]),
]


def panel_json(panel, panel_id, x, y, height):
    overrides = []
    if "right_axis" in panel:
        ra = panel["right_axis"]
        overrides.append({
            "matcher": {"id": "byRegexp", "options": f".*{ra['match']}.*"},
            "properties": [
                {"id": "custom.axisPlacement", "value": "right"},
                {"id": "unit", "value": ra["unit"]},
            ],
        })
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": panel["title"],
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": panel["width"], "h": height},
        "fieldConfig": {
            "defaults": {
                "unit": panel["unit"],
                "min": 0,
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 2,
                    "fillOpacity": 25 if panel.get("stack") else 5,
                    "stacking": {"mode": "normal" if panel.get("stack") else "none", "group": "A"},
                    "showPoints": "never",
                },
            },
            "overrides": overrides,
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": expr,
                "legendFormat": legend,
                "range": True,
            }
            for i, (expr, legend) in enumerate(panel["targets"])
        ],
    }


def dashboard():
    panels, panel_id, y = [], 1, 0
    for row_title, row_panels in ROWS:
        panels.append({"id": panel_id, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})
        panel_id, y, x = panel_id + 1, y + 1, 0
        for panel in row_panels:
            if x + panel["width"] > 24:
                x, y = 0, y + 8
            panels.append(panel_json(panel, panel_id, x, y, 8))
            panel_id, x = panel_id + 1, x + panel["width"]
        y += 8
    return {
        "uid": "mambaserve",
        "title": "mambaserve",
        "description": "Mamba-family SSM serving: vLLM-compatible request metrics plus fixed-size "
                       "state slots and sessions. Queries read deploy/prometheus/recording_rules.yml.",
        "tags": ["mambaserve", "llm", "vllm-compatible"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": 38,
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
            },
            {
                "name": "model_name",
                "label": "Model",
                "type": "query",
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "definition": "label_values(vllm:num_requests_running, model_name)",
                "query": {"query": "label_values(vllm:num_requests_running, model_name)",
                          "refId": "model_name"},
                "refresh": 2,
                "includeAll": True,
                "allValue": ".+",
                "multi": True,
                "current": {"text": "All", "value": "$__all"},
                "sort": 1,
            },
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }


def panel_queries(dash):
    """(panel title, expr, legend) for every query of a dashboard JSON."""
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"], target.get("legendFormat", "")))
    return out


if __name__ == "__main__":
    path = pathlib.Path(__file__).with_name("mambaserve-dashboard.json")
    text = json.dumps(dashboard(), indent=2) + "\n"
    if "--check" in sys.argv[1:]:
        if path.read_text() != text:
            sys.exit(f"{path} is out of date: run python3 {__file__}")
        print(f"{path.name} is up to date ({len(panel_queries(dashboard()))} queries)")
    else:
        path.write_text(text)
        print(f"wrote {path} ({len(panel_queries(dashboard()))} queries)")
