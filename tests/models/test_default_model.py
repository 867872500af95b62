#!/usr/bin/env -S /usr/bin/python3
"""The shipped default model (models/kjv-mamba) against what its training measured.

Debian's interpreter, standard library only:

    /usr/bin/python3 tests/models/test_default_model.py --mambaserve build/cpu/bin/mambaserve

eval.json holds the training script's own float64 evaluation. This checks that the engine
computes exactly what was trained, through the same code paths a client uses:
  * `mambaserve perplexity` (prompt_logprobs) on heldout.txt, in the same windows, gives the
    same held-out perplexity to 1e-3 relative;
  * `mambaserve eval` continues the card's prompt with the same 64 greedy tokens;
and that the model learned: held-out perplexity at least 3x lower than the unigram baseline on
the same tokens, and a greedy continuation that is not a loop (distinct-word ratio >= 0.5).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "models", "kjv-mamba")
ARGS = None


def run(argv):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    if p.returncode != 0:
        raise AssertionError("%s exited %d:\n%s" % (" ".join(argv), p.returncode, p.stderr[-3000:]))
    return p


class DefaultModel(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(os.path.join(MODEL, "eval.json")) as f:
            cls.trained = json.load(f)
        cls.work = tempfile.mkdtemp(prefix="mambaserve-default-model-")

    def test_engine_perplexity_equals_training_evaluation(self):
        h = self.trained["heldout"]
        out = os.path.join(self.work, "perplexity.json")
        run([ARGS.mambaserve, "perplexity", "--model", MODEL, "--text-file",
             os.path.join(MODEL, h["file"]), "--context", str(h["context"]), "--json", out,
             "--threads", str(ARGS.threads)])
        with open(out) as f:
            got = json.load(f)
        self.assertEqual(got["tokens"], h["tokens"], "the engine's tokenizer splits the text differently")
        self.assertEqual(got["scored_tokens"], h["scored_tokens"])
        relative = abs(got["perplexity"] - h["perplexity"]) / h["perplexity"]
        print("held-out perplexity: engine %.6f, training (float64) %.6f, relative difference %.2e"
              % (got["perplexity"], h["perplexity"], relative))
        self.assertLessEqual(relative, 1e-3)

    def test_it_learned_more_than_word_frequencies(self):
        h = self.trained["heldout"]
        self.assertGreaterEqual(h["unigram_perplexity"] / h["perplexity"], 3.0)

    def test_greedy_continuation_matches_training_and_is_not_a_loop(self):
        s = self.trained["greedy_sample"]
        out = os.path.join(self.work, "eval.json")
        run([ARGS.mambaserve, "eval", "--model", MODEL, "--tokens",
             ",".join(str(t) for t in s["prompt_ids"]), "--generate", str(len(s["token_ids"])),
             "--json", out, "--backend", "cpu", "--threads", str(ARGS.threads)])
        with open(out) as f:
            self.assertEqual(json.load(f)["generated"], s["token_ids"])
        decoded = run([ARGS.mambaserve, "tokenize", "--tokenizer",
                       os.path.join(MODEL, "tokenizer.json"), "--decode", "--ids",
                       ",".join(str(t) for t in s["token_ids"]), "--json", "-"]).stdout
        words = json.loads(decoded)["text"].split()
        self.assertGreaterEqual(len(set(words)) / len(words), 0.5, " ".join(words))


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--mambaserve", required=True)
    ap.add_argument("--threads", type=int, default=0)
    ARGS, rest = ap.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
