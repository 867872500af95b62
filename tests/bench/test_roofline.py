"""bench/roofline.py counts the bytes the engine streams from the model's shapes: its weight
accounting must equal, byte for byte, the tensors of checkpoints `mambaserve make-model` writes
(both model types, tied and untied heads, biases, f32 and bf16), and its Falcon-Mamba-7B preset must
have the published 7.27 B parameters.

  /usr/bin/python3 tests/bench/test_roofline.py --mambaserve build/cpu/bin/mambaserve
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
ROOFLINE = os.path.join(ROOT, "bench", "roofline.py")
ARGS = None


def checkpoint_tensor_bytes(path):
    """The bytes of every tensor in a safetensors file, from its header."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    return sum(t["data_offsets"][1] - t["data_offsets"][0]
               for name, t in header.items() if name != "__metadata__")


def roofline(*args):
    return subprocess.run([sys.executable, ROOFLINE, *args], check=True, capture_output=True,
                          text=True).stdout


class RooflineTest(unittest.TestCase):
    def test_weight_bytes_equal_the_checkpoints(self):
        cases = [("tiny", "mamba", "f32", []), ("tiny", "falcon_mamba", "bf16", []),
                 ("tiny", "mamba", "bf16", ["--untie-embeddings", "--use-bias"]),
                 ("tiny", "falcon_mamba", "f32", ["--no-conv-bias", "--layers", "3"]),
                 ("130m", "mamba", "bf16", [])]
        for preset, model_type, dtype, extra in cases:
            with self.subTest(preset=preset, type=model_type, dtype=dtype, extra=extra), \
                    tempfile.TemporaryDirectory() as out:
                subprocess.run([ARGS.mambaserve, "make-model", "--preset", preset, "--model-type",
                                model_type, "--dtype", dtype, "--out", out, *extra],
                               check=True, capture_output=True)
                expected = checkpoint_tensor_bytes(os.path.join(out, "model.safetensors"))
                counted = int(roofline("--config", os.path.join(out, "config.json"), "--dtype",
                                       dtype, "--weights-only"))
                self.assertEqual(counted, expected)

    def test_falcon_mamba_7b_has_its_published_size(self):
        params = int(roofline("--preset", "falcon-mamba-7b", "--dtype", "f32", "--weights-only")) // 4
        self.assertGreater(params, 7.25e9)
        self.assertLess(params, 7.30e9)

    def test_measurements_are_printed_beside_the_estimates(self):
        with tempfile.TemporaryDirectory() as d:
            measured = os.path.join(d, "cuda.json")
            with open(measured, "w") as f:
                json.dump({"decode": [{"batch": 1, "tokens_per_s": 150.0,
                                       "greedy_token_only_tokens_per_s": 155.0}],
                           "prefill": {"tokens": 2048, "tokens_per_s": 30000.0}}, f)
            out_json = os.path.join(d, "roofline.json")
            text = roofline("--batches", "1", "--measured", measured, "--json", out_json)
            self.assertIn("150.0", text)
            with open(out_json) as f:
                result = json.load(f)
            row = result["decode"][0]
            self.assertEqual(row["measured_tokens_per_s"], 150.0)
            # The estimate can never beat the pure roofline, which adds no per-kernel cost.
            self.assertLessEqual(row["with_logits"]["estimated_tokens_per_s"],
                                 row["with_logits"]["roofline_tokens_per_s"])
            self.assertEqual(result["prefill"]["measured_tokens_per_s"], 30000.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mambaserve", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0], *rest])
