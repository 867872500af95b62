"""Offline validation of deploy/kubernetes: the generated copies are in sync with deploy/prometheus
and deploy/grafana; yamllint passes on every YAML file under deploy/; every overlay renders with
`kubectl kustomize`; the rendered built-in objects validate against the Kubernetes 1.30 OpenAPI
schemas (kubernetes-validate --strict); the Prometheus Operator objects, for which no schema ships,
pass a structural check; and the objects agree with each other and with the server's flags.

  build/pyenv/bin/python3 tests/deploy/test_kubernetes.py --binary build/cpu/bin/mambaserve
"""
import argparse
import pathlib
import re
import shutil
import subprocess
import sys
import unittest

import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("cpu", "gpu")
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
ARGS = None


def render(overlay):
    out = subprocess.run([ARGS.kubectl, "kustomize", str(DEPLOY / "kubernetes" / "overlays" / overlay)],
                         check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


class KubernetesTest(unittest.TestCase):
    def test_generated_copies_are_in_sync(self):
        subprocess.run([sys.executable, str(DEPLOY / "kubernetes" / "render.py"), "--check"], check=True)

    def test_yamllint(self):
        files = sorted(str(p) for p in DEPLOY.rglob("*.y*ml"))
        subprocess.run([ARGS.yamllint, "--strict", "-c", str(DEPLOY / ".yamllint"), *files], check=True)

    @unittest.skipUnless(shutil.which("kubectl"), "kubectl (with kustomize) is not installed")
    def test_overlays_render_and_validate(self):
        for overlay in OVERLAYS:
            with self.subTest(overlay=overlay):
                docs = render(overlay)
                kinds = sorted(d["kind"] for d in docs)
                for kind in ("Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                             "ServiceMonitor", "PrometheusRule", "Ingress", "ConfigMap"):
                    self.assertIn(kind, kinds)
                for d in docs:
                    if d["kind"] in OPERATOR_KINDS:
                        continue
                    kubernetes_validate.validate(d, "1.30.0", strict=True)
                self.check_consistency(overlay, {(d["kind"], d["metadata"]["name"]): d for d in docs})

    def check_consistency(self, overlay, objects):
        deploy = objects[("Deployment", "mambaserve")]
        pod = deploy["spec"]["template"]
        labels = pod["metadata"]["labels"]
        container = pod["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        service = objects[("Service", "mambaserve")]
        # The Service selects the pods, its grpc port speaks h2c, its target ports exist.
        self.assertTrue(set(service["spec"]["selector"].items()) <= set(labels.items()))
        grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
        self.assertEqual(grpc_port["appProtocol"], "kubernetes.io/h2c")
        for p in service["spec"]["ports"]:
            self.assertIn(p["targetPort"], ports)
        # Probes: readiness on the default health service, liveness on the always-serving one.
        self.assertEqual(container["readinessProbe"]["grpc"]["port"], ports["grpc"])
        self.assertEqual(container["livenessProbe"]["grpc"]["service"], "liveness")
        # Every $(VAR) in the args comes from the flags ConfigMap, and every flag is one the
        # server knows (checked against `mambaserve serve --help`).
        flags_map = next(o for (k, n), o in objects.items() if k == "ConfigMap" and n.startswith("mambaserve-flags"))
        self.assertEqual(container["envFrom"][0]["configMapRef"]["name"], flags_map["metadata"]["name"])
        help_text = subprocess.run([ARGS.binary, "serve", "--help"], check=True, capture_output=True,
                                   text=True).stdout
        for arg in container["args"]:
            flag = arg.split("=")[0]
            self.assertRegex(help_text, rf"(?m)^\s+{re.escape(flag)}(?=\s)", f"{overlay}: unknown flag {flag}")
            for var in re.findall(r"\$\((\w+)\)", arg):
                self.assertIn(var, flags_map["data"], f"{overlay}: {arg}")
        # The pod may take its whole drain: preStop + --shutdown-grace-s fit the termination period.
        grace = int(flags_map["data"]["SHUTDOWN_GRACE_S"])
        pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
        self.assertGreater(pod["spec"]["terminationGracePeriodSeconds"], grace + pre_stop)
        # The operator objects: structure, and what they point at exists.
        monitor = objects[("ServiceMonitor", "mambaserve")]
        self.assertEqual(monitor["apiVersion"], "monitoring.coreos.com/v1")
        self.assertTrue(set(monitor["spec"]["selector"]["matchLabels"].items()) <= set(service["metadata"]["labels"].items()))
        self.assertIn(monitor["spec"]["endpoints"][0]["port"], {p["name"] for p in service["spec"]["ports"]})
        rule = objects[("PrometheusRule", "mambaserve")]
        self.assertEqual(rule["apiVersion"], "monitoring.coreos.com/v1")
        for group in rule["spec"]["groups"]:
            self.assertTrue(group["name"])
            for r in group["rules"]:
                self.assertTrue(("record" in r) != ("alert" in r), r)
                self.assertTrue(r["expr"])
        # The HPA scales this Deployment; the dashboard ConfigMap carries the sidecar's label.
        hpa = objects[("HorizontalPodAutoscaler", "mambaserve")]
        self.assertEqual(hpa["spec"]["scaleTargetRef"]["name"], "mambaserve")
        dashboard = objects[("ConfigMap", "mambaserve-grafana-dashboard")]
        self.assertEqual(dashboard["metadata"]["labels"]["grafana_dashboard"], "1")
        # The ingress hashes on the session header and speaks gRPC to the backends.
        annotations = objects[("Ingress", "mambaserve")]["metadata"]["annotations"]
        self.assertEqual(annotations["nginx.ingress.kubernetes.io/backend-protocol"], "GRPC")
        self.assertEqual(annotations["nginx.ingress.kubernetes.io/upstream-hash-by"], "$http_x_session_id")
        if overlay == "gpu":
            self.assertEqual(container["resources"]["limits"]["nvidia.com/gpu"], 1)
            self.assertIn("--model=/models", container["args"])
            # The session-store component: the flag, and a Redis Service where it points.
            self.assertIn("--session-store=$(SESSION_STORE)", container["args"])
            redis = objects[("Service", "mambaserve-redis")]
            self.assertEqual(flags_map["data"]["SESSION_STORE"],
                             f"redis://{redis['metadata']['name']}:{redis['spec']['ports'][0]['port']}")
            redis_pod = objects[("Deployment", "mambaserve-redis")]["spec"]["template"]
            self.assertTrue(set(redis["spec"]["selector"].items()) <= set(redis_pod["metadata"]["labels"].items()))


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--kubectl", default=shutil.which("kubectl") or "kubectl")
    parser.add_argument("--yamllint", default=str(pathlib.Path(sys.executable).parent / "yamllint"))
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0], "-v", *rest])


if __name__ == "__main__":
    main()
