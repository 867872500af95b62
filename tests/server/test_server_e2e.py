"""End-to-end tests of `mambaserve serve` with a third-party client: Python grpcio, the stock
grpcio-health-checking and grpcio-reflection clients, and stubs compiled from the .proto here.

Run by CTest (server_python_e2e) in the venv scripts/python-test-env.sh makes:
  build/pyenv/bin/python3 tests/server/test_server_e2e.py --binary build/cpu/bin/mambaserve \
      --mambactl build/cpu/bin/mambactl --proto-dir proto
"""
import argparse
import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import grpc

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from google.protobuf import descriptor_pb2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testing"))
from proto_stubs import compile_protos  # noqa: E402
from serve_process import ServeProcess  # noqa: E402

ARGS = None
pb = None
pb_grpc = None


class Server(ServeProcess):
    """The real binary on 127.0.0.1 with a port it picks, and a channel to it once it accepts calls."""

    def __init__(self, model_dir, work_dir, *extra):
        super().__init__(ARGS.binary, model_dir, work_dir, *extra)
        self.channel = grpc.insecure_channel(self.target)
        grpc.channel_ready_future(self.channel).result(timeout=30)

    def stop(self):
        self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        return code


class StartupE2E(unittest.TestCase):
    def test_not_serving_until_the_default_model_is_ready(self):
        """Without --model the server listens first, unpacks the default model, then serves."""
        work = tempfile.mkdtemp(prefix="mambaserve-py-start-")
        port_file = os.path.join(work, "port")
        proc = subprocess.Popen([ARGS.binary, "serve", "--model-cache", os.path.join(work, "cache"),
                                 "--listen", "127.0.0.1:0", "--port-file", port_file, "--threads", "1"],
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(port_file):
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.001)
            with open(port_file) as f:
                channel = grpc.insecure_channel("127.0.0.1:" + f.read().strip())
            health = health_pb2_grpc.HealthStub(channel)
            seen = [health.Check(health_pb2.HealthCheckRequest(), timeout=10).status]
            if seen[0] == health_pb2.HealthCheckResponse.NOT_SERVING:
                stub = pb_grpc.MambaServeStub(channel)
                try:  # still loading (UNAVAILABLE), unless it became ready in between
                    list(stub.Generate(pb.GenerateRequest(text="hi"), timeout=10))
                except grpc.RpcError as e:
                    self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE)
                    self.assertIn("loading", e.details())
            while seen[-1] != health_pb2.HealthCheckResponse.SERVING:
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.01)
                seen.append(health.Check(health_pb2.HealthCheckRequest(), timeout=10).status)
            self.assertEqual(seen[0], health_pb2.HealthCheckResponse.NOT_SERVING)
            self.assertTrue(os.path.exists(os.path.join(work, "cache", "tokenizer.json")))
            channel.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(timeout=20), 0)
            shutil.rmtree(work, ignore_errors=True)


class ServerE2E(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="mambaserve-py-")
        cls.model = os.path.join(cls.work, "model")
        subprocess.run([ARGS.binary, "make-model", "--preset", "tiny", "--seed", "11", "--out", cls.model], check=True)
        cls.server = Server(cls.model, cls.work, "--max-prompt-tokens", "128", "--max-tokens-limit", "1000000")
        cls.stub = pb_grpc.MambaServeStub(cls.server.channel)
        health = health_pb2_grpc.HealthStub(cls.server.channel)
        deadline = time.monotonic() + 30
        while health.Check(health_pb2.HealthCheckRequest(), timeout=5).status != \
                health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "server never became SERVING"
            time.sleep(0.02)

    @classmethod
    def tearDownClass(cls):
        code = cls.server.stop()
        shutil.rmtree(cls.work, ignore_errors=True)
        assert code == 0, f"server exited with {code}"

    # --- helpers
    def generate(self, timeout=60, metadata=None, **kwargs):
        responses = list(self.stub.Generate(pb.GenerateRequest(**kwargs), timeout=timeout, metadata=metadata))
        tokens = [t for r in responses for t in r.token_ids]
        return responses, tokens, "".join(r.text for r in responses)

    def tokens_request(self, ids, max_tokens, temperature=0.0, **sampling):
        return dict(tokens=pb.TokenIds(ids=ids),
                    sampling=pb.SamplingParams(max_tokens=max_tokens, temperature=temperature, ignore_eos=True,
                                               **sampling))

    def assert_code(self, code, fragment, **kwargs):
        metadata = kwargs.pop("metadata", None)
        with self.assertRaises(grpc.RpcError) as caught:
            self.generate(metadata=metadata, **kwargs)
        self.assertEqual(caught.exception.code(), code, caught.exception.details())
        self.assertIn(fragment, caught.exception.details())

    def wait_idle(self):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            info = self.stub.GetModelInfo(pb.GetModelInfoRequest())
            if info.running == 0 and info.waiting == 0 and info.slots_in_use == 0:
                return True
            time.sleep(0.02)
        return False

    # --- tests
    def test_health_service_reports_serving(self):
        health = health_pb2_grpc.HealthStub(self.server.channel)
        for service in ("", "mambaserve.v1.MambaServe"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            self.assertEqual(reply.status, health_pb2.HealthCheckResponse.SERVING, service)

    def test_reflection_describes_the_api(self):
        stub = reflection_pb2_grpc.ServerReflectionStub(self.server.channel)
        requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol="mambaserve.v1.MambaServe")]
        replies = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
        services = {s.name for s in replies[0].list_services_response.service}
        self.assertIn("mambaserve.v1.MambaServe", services)
        self.assertIn("grpc.health.v1.Health", services)
        files = [descriptor_pb2.FileDescriptorProto.FromString(b)
                 for b in replies[1].file_descriptor_response.file_descriptor_proto]
        api = next(f for f in files if f.package == "mambaserve.v1")
        methods = {m.name: m for m in api.service[0].method}
        self.assertTrue(methods["Generate"].server_streaming)
        self.assertLessEqual({"CreateSession", "ExportSession", "ImportSession", "Tokenize", "GetModelInfo"},
                             set(methods))

    def test_streams_text_with_usage_on_the_last_response(self):
        responses, tokens, text = self.generate(
            text="It is a truth universally acknowledged",
            sampling=pb.SamplingParams(max_tokens=20, seed=5, ignore_eos=True, logprobs=3))
        self.assertGreater(len(responses), 5)
        self.assertEqual(len(tokens), 20)
        last = responses[-1]
        self.assertEqual(last.finish_reason, pb.FINISH_REASON_LENGTH)
        self.assertTrue(all(r.finish_reason == pb.FINISH_REASON_UNSPECIFIED for r in responses[:-1]))
        prompt = self.stub.Tokenize(pb.TokenizeRequest(text="It is a truth universally acknowledged"))
        self.assertEqual(last.usage.prompt_tokens, len(prompt.token_ids))
        self.assertEqual(last.usage.generated_tokens, 20)
        self.assertGreaterEqual(last.usage.time_to_first_token_s, 0)
        for r in responses:
            for lp in r.logprobs:
                self.assertEqual(len(lp.top), 3)
                self.assertLessEqual(lp.logprob, 0)
        roundtrip = self.stub.Detokenize(pb.DetokenizeRequest(token_ids=prompt.token_ids))
        self.assertEqual(roundtrip.text, "It is a truth universally acknowledged")

    def test_stop_string_is_not_returned(self):
        _, _, full = self.generate(**self.tokens_request([3, 4, 5], 30))
        ascii_pairs = [i for i in range(2, len(full) - 1) if full[i:i + 2].isascii() and full[i:i + 2].strip()
                       and len(full[i:i + 2].strip()) == 2]
        self.assertTrue(ascii_pairs, full)
        stop = full[ascii_pairs[0]:ascii_pairs[0] + 2]
        responses, _, text = self.generate(**self.tokens_request([3, 4, 5], 30, stop=[stop]))
        self.assertEqual(responses[-1].finish_reason, pb.FINISH_REASON_STOP)
        self.assertEqual(text, full[:full.index(stop)])

    def test_sixty_four_concurrent_streams_match_alone(self):
        def request(i):
            return self.tokens_request([1 + i, 7, 9, 100 + i], 16, temperature=0.7, seed=i, top_k=40)

        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            together = list(pool.map(lambda i: self.generate(**request(i))[1], range(64)))
        for i in range(64):
            self.assertEqual(len(together[i]), 16)
            self.assertEqual(together[i], self.generate(**request(i))[1], f"request {i}")

    def test_session_resume_export_import(self):
        sid = self.stub.CreateSession(pb.CreateSessionRequest()).session_id
        self.assertTrue(sid)
        _, g1, _ = self.generate(metadata=[("x-session-id", sid)], **self.tokens_request([11, 12, 13], 5))
        _, g2, _ = self.generate(session_id=sid, **self.tokens_request([14, 15], 6))
        _, one_shot, _ = self.generate(**self.tokens_request([11, 12, 13] + g1 + [14, 15], 6))
        self.assertEqual(g2, one_shot)
        info = self.stub.GetSession(pb.GetSessionRequest(session_id=sid))
        self.assertEqual(info.length_tokens, 3 + 5 + 2 + 6)
        self.assertIn(sid, [s.session_id for s in self.stub.ListSessions(pb.ListSessionsRequest()).sessions])

        chunks = list(self.stub.ExportSession(pb.ExportSessionRequest(session_id=sid)))
        blob = b"".join(c.blob_chunk for c in chunks)
        self.assertEqual(chunks[0].blob_bytes, len(blob))
        self.assertEqual(chunks[0].format_version, 2)
        _, direct, _ = self.generate(session_id=sid, **self.tokens_request([16], 6))
        self.stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid))
        self.assert_code(grpc.StatusCode.NOT_FOUND, "deleted", session_id=sid, **self.tokens_request([16], 6))
        imported = self.stub.ImportSession(iter(
            [pb.ImportSessionRequest(session_id=sid, blob_chunk=blob[:50]),
             pb.ImportSessionRequest(blob_chunk=blob[50:])]))
        self.assertEqual(imported.length_tokens, 16)
        _, resumed, _ = self.generate(session_id=sid, **self.tokens_request([16], 6))
        self.assertEqual(resumed, direct)

        with self.assertRaises(grpc.RpcError) as caught:
            self.stub.ImportSession(iter([pb.ImportSessionRequest(session_id="other",
                                                                  blob_chunk=blob[:-3])]))
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("session blob", caught.exception.details())

    def test_invalid_arguments_name_the_field_and_the_server_keeps_serving(self):
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        for field, value in [("max_tokens", 0), ("temperature", -0.1), ("top_k", -1), ("top_p", 1.5),
                             ("min_p", -1.0), ("repetition_penalty", 0.0), ("presence_penalty", 2.5),
                             ("frequency_penalty", -2.5), ("logprobs", 50)]:
            self.assert_code(invalid, field, tokens=pb.TokenIds(ids=[1, 2]),
                             sampling=pb.SamplingParams(**{field: value}))
        self.assert_code(invalid, "prompt is empty", text="")
        self.assert_code(invalid, "--max-prompt-tokens", tokens=pb.TokenIds(ids=[5] * 129))
        self.assert_code(invalid, "tokens.ids[0]", tokens=pb.TokenIds(ids=[10 ** 6]))
        self.assert_code(grpc.StatusCode.NOT_FOUND, "does not exist", text="hi", session_id="nobody")
        self.assert_code(invalid, "disagree", text="hi", session_id="a", metadata=[("x-session-id", "b")])

        # Invalid UTF-8 in the text field, sent as raw bytes (the Python API cannot build it).
        raw = self.server.channel.unary_stream("/mambaserve.v1.MambaServe/Generate",
                                               request_serializer=None,
                                               response_deserializer=pb.GenerateResponse.FromString)
        bad_text = b"ok \xff\xfe"
        with self.assertRaises(grpc.RpcError) as caught:
            list(raw(b"\x0a" + bytes([len(bad_text)]) + bad_text, timeout=10))
        self.assertEqual(caught.exception.code(), invalid, caught.exception.details())
        self.assertIn("UTF-8", caught.exception.details())

        _, tokens, _ = self.generate(**self.tokens_request([1, 2, 3], 4))
        self.assertEqual(len(tokens), 4)

    def test_cancel_mid_stream_frees_the_slot(self):
        call = self.stub.Generate(pb.GenerateRequest(**self.tokens_request([1, 2], 1000000)), timeout=60)
        for _ in range(3):
            next(call)
        call.cancel()
        self.assertEqual(call.code(), grpc.StatusCode.CANCELLED)
        self.assertTrue(self.wait_idle())

    def test_client_disconnect_frees_the_slot(self):
        # A client process killed mid-stream: no cancel message, just a dropped connection.
        client = subprocess.Popen([ARGS.mambactl, "--target", self.server.target, "generate", "--tokens", "1,2",
                                   "--max-tokens", "1000000", "--ignore-eos"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while self.stub.GetModelInfo(pb.GetModelInfoRequest()).running == 0:
            self.assertLess(time.monotonic(), deadline, "the client's stream never started")
            time.sleep(0.01)
        client.kill()
        client.wait()
        self.assertTrue(self.wait_idle())

    def test_model_info(self):
        info = self.stub.GetModelInfo(pb.GetModelInfoRequest())
        self.assertEqual(info.architecture, "mamba")
        self.assertEqual(info.vocab_size, 512)
        self.assertEqual(info.tokenizer_vocab_size, 512)
        self.assertEqual(info.backend, "cpu")
        self.assertGreater(info.state_bytes_per_session, 0)
        self.assertGreater(info.slot_capacity, 0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--proto-dir", required=True)
    parser.add_argument("--mambactl", required=True)
    ARGS, rest = parser.parse_known_args()
    out = tempfile.mkdtemp(prefix="mambaserve-pyproto-")
    try:
        pb, pb_grpc = compile_protos(ARGS.proto_dir, out)
        unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
    finally:
        shutil.rmtree(out, ignore_errors=True)
