#!/usr/bin/env python3
"""Trains mambaserve's default model: a small Mamba on the King James Version, on the CPU.

    tools/train/run.sh                      # installs what is missing, then runs this
    python train.py --out models/kjv-mamba  # the shipped model (its defaults)

Deterministic for a given seed and thread count. Writes, in the Hugging Face layout:
config.json, model.safetensors, tokenizer.json; and beside them heldout.txt (the held-out text),
eval.json (the figures the model card quotes, computed here in float64) and README.md (the card).
Inference stays in mambaserve: tests score heldout.txt with `mambaserve perplexity` and must
reproduce eval.json.
"""

import argparse
import json
import math
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kjv_corpus  # noqa: E402
import model_card  # noqa: E402
from mamba_torch import MambaLM  # noqa: E402

EOS = "<|endoftext|>"
# Greedy continuations the card reports: the first is its fixed prompt.
SAMPLE_PROMPTS = [
    "In the beginning",
    "And God said unto Moses,",
    "And it came to pass, when",
    "Blessed are the",
    "The LORD is my shepherd",
    "Then Jesus said unto them,",
    "And the king said",
]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=1611)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--expand", type=int, default=2)
    p.add_argument("--state-size", type=int, default=16)
    p.add_argument("--conv-kernel", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--eval-context", type=int, default=256,
                   help="held-out windows of this many tokens, each from a fresh state")
    p.add_argument("--sample-tokens", type=int, default=64)
    p.add_argument("--evaluate-only", action="store_true",
                   help="re-run the evaluation of the model already in --out (same arguments as "
                        "its training) and rewrite eval.json and README.md")
    return p.parse_args()


def train_tokenizer(text, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(text.splitlines(), trainer)
    return tok


def hf_config(args, vocab_size):
    d_inner = args.expand * args.hidden_size
    return {
        "architectures": ["MambaForCausalLM"],
        "model_type": "mamba",
        "vocab_size": vocab_size,
        "hidden_size": args.hidden_size,
        "intermediate_size": d_inner,
        "num_hidden_layers": args.layers,
        "state_size": args.state_size,
        "conv_kernel": args.conv_kernel,
        "expand": args.expand,
        "time_step_rank": math.ceil(args.hidden_size / 16),
        "layer_norm_epsilon": 1e-5,
        "use_bias": False,
        "use_conv_bias": True,
        "hidden_act": "silu",
        "residual_in_fp32": True,
        "tie_word_embeddings": True,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "pad_token_id": 0,
        "torch_dtype": "float32",
    }


def lr_at(step, args):
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model, args):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "A_log" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "A_log" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=args.lr, betas=(0.9, 0.95))


def train(model, train_ids, args):
    gen = torch.Generator().manual_seed(args.seed)
    optimizer = make_optimizer(model, args)
    log = []
    bar = tqdm(range(args.steps), desc="training", unit="step", dynamic_ncols=True,
               mininterval=1 if sys.stderr.isatty() else 30)
    smoothed = None
    for step in bar:
        starts = torch.randint(0, len(train_ids) - args.seq_len - 1, (args.batch,), generator=gen)
        batch = torch.stack([train_ids[s:s + args.seq_len + 1] for s in starts.tolist()])
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args)
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        value = loss.item()
        smoothed = value if smoothed is None else 0.98 * smoothed + 0.02 * value
        bar.set_postfix(loss="%.3f" % smoothed, lr="%.2e" % lr_at(step, args), refresh=False)
        if step % 25 == 0 or step == args.steps - 1:
            log.append({"step": step, "loss": round(value, 5)})
    return log


def windows(ids, context):
    """Non-overlapping windows of `context` tokens (the last may be shorter, at least 2)."""
    return [ids[i:i + context] for i in range(0, len(ids) - 1, context) if len(ids[i:i + context]) >= 2]


@torch.no_grad()
def window_nll(model, ids, context):
    """(sum of -log p(token | the window's tokens before it), tokens scored): each window starts
    from a fresh state and scores every token but its first; what `mambaserve perplexity
    --context N` computes."""
    total, count = 0.0, 0
    for w in windows(ids, context):
        logp = F.log_softmax(model(w.unsqueeze(0))[0, :-1], dim=-1)
        total -= logp.gather(1, w[1:].unsqueeze(1)).sum().item()
        count += len(w) - 1
    return total, count


def unigram_nll(train_ids, ids, context, vocab_size):
    """The same scored tokens under add-one-smoothed unigram frequencies of the training tokens."""
    counts = torch.bincount(train_ids, minlength=vocab_size).double() + 1.0
    logp = torch.log(counts / counts.sum())
    total, count = 0.0, 0
    for w in windows(ids, context):
        total -= logp[w[1:]].sum().item()
        count += len(w) - 1
    return total, count


@torch.no_grad()
def greedy(model, prompt_ids, n):
    ids = list(prompt_ids)
    for _ in range(n):
        logits = model(torch.tensor([ids]))[0, -1]
        ids.append(int(torch.argmax(logits)))  # ties to the lowest id, like the engine
    return ids[len(prompt_ids):]


def distinct_word_ratio(text):
    words = text.split()
    return len(set(words)) / len(words) if words else 0.0


def load_weights(model, path):
    """Loads a model.safetensors this script wrote (tied lm_head: not stored)."""
    tensors = load_file(path)
    missing = sorted(set(model.hf_state_dict()) - set(tensors))
    if missing:
        raise SystemExit("%s lacks %s" % (path, ", ".join(missing)))
    with torch.no_grad():
        model.embeddings.weight.copy_(tensors["backbone.embeddings.weight"])
        model.norm_f.weight.copy_(tensors["backbone.norm_f.weight"])
        for i, layer in enumerate(model.layers):
            p = "backbone.layers.%d." % i
            layer.norm.weight.copy_(tensors[p + "norm.weight"])
            for name, param in layer.mixer.named_parameters():
                param.copy_(tensors[p + "mixer." + name])


def evaluate(model, config, tokenizer, train_ids, heldout_ids, args):
    """Every figure the card quotes, in float64: what mambaserve's float32 engine must reproduce."""
    model64 = MambaLM(config).double()
    model64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    model64.eval()
    nll, scored = window_nll(model64, heldout_ids, args.eval_context)
    train_slice = train_ids[:len(heldout_ids)]
    train_nll, train_scored = window_nll(model64, train_slice, args.eval_context)
    uni_nll, _ = unigram_nll(train_ids, heldout_ids, args.eval_context, config["vocab_size"])
    samples = []
    for prompt in SAMPLE_PROMPTS:
        prompt_ids = tokenizer.encode(prompt).ids
        sample_ids = greedy(model64, prompt_ids, args.sample_tokens)
        text = tokenizer.decode(sample_ids)
        samples.append({"prompt": prompt, "prompt_ids": prompt_ids, "token_ids": sample_ids,
                        "text": text, "distinct_word_ratio": distinct_word_ratio(text)})
    return {
        "heldout": {
            "file": "heldout.txt",
            "context": args.eval_context,
            "tokens": len(heldout_ids),
            "scored_tokens": scored,
            "nll_sum": nll,
            "mean_nll": nll / scored,
            "perplexity": math.exp(nll / scored),
            "unigram_mean_nll": uni_nll / scored,
            "unigram_perplexity": math.exp(uni_nll / scored),
        },
        "train_slice": {"tokens": len(train_slice), "mean_nll": train_nll / train_scored,
                        "perplexity": math.exp(train_nll / train_scored)},
        # The first is the card's fixed prompt; the others show how typical it is.
        "greedy_sample": samples[0],
        "other_greedy_samples": samples[1:],
    }


def main():
    args = parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    started = time.time()

    train_text, heldout_text = kjv_corpus.split(kjv_corpus.dump_bible())
    tokenizer_path = os.path.join(args.out, "tokenizer.json")
    if args.evaluate_only:
        tokenizer = Tokenizer.from_file(tokenizer_path)
    else:
        tokenizer = train_tokenizer(train_text, args.vocab_size)
    vocab_size = tokenizer.get_vocab_size()
    train_ids = torch.tensor(tokenizer.encode(train_text).ids, dtype=torch.long)
    heldout_ids = torch.tensor(tokenizer.encode(heldout_text).ids, dtype=torch.long)
    print("corpus: %d train tokens, %d held-out tokens, vocabulary %d" %
          (len(train_ids), len(heldout_ids), vocab_size), flush=True)

    config = hf_config(args, vocab_size)
    model = MambaLM(config)
    params = sum(p.numel() for p in model.parameters())
    print("model: %d parameters" % params, flush=True)

    weights = os.path.join(args.out, "model.safetensors")
    eval_path = os.path.join(args.out, "eval.json")
    if args.evaluate_only:
        load_weights(model, weights)
        with open(eval_path) as f:
            training = json.load(f)["training"]
    else:
        train_started = time.time()
        log = train(model, train_ids, args)
        train_seconds = time.time() - train_started
        training = {
            "command": " ".join(["python3", "tools/train/train.py"] + sys.argv[1:]),
            "args": vars(args),
            "parameters": params,
            "train_tokens": len(train_ids),
            "train_seconds": round(train_seconds, 1),
            "total_seconds": round(time.time() - started, 1),
            "machine": "%s, %d threads, torch %s" % (platform.processor() or platform.machine(),
                                                     args.threads, torch.__version__),
            "loss_log": log,
        }
        tokenizer.save(tokenizer_path)
        with open(os.path.join(args.out, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        save_file(model.hf_state_dict(), weights, metadata={"format": "pt"})
        os.chmod(weights, 0o644)
        with open(os.path.join(args.out, "heldout.txt"), "w", encoding="utf-8") as f:
            f.write(heldout_text)
    model.eval()

    evaluation = evaluate(model, config, tokenizer, train_ids, heldout_ids, args)
    evaluation["training"] = training
    with open(eval_path, "w") as f:
        json.dump(evaluation, f, indent=1)
        f.write("\n")
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(model_card.render(config, evaluation))
    h, sample = evaluation["heldout"], evaluation["greedy_sample"]
    print("held-out perplexity %.3f (unigram %.1f, %.1fx lower); sample (distinct words %.2f): %r" %
          (h["perplexity"], h["unigram_perplexity"], h["unigram_perplexity"] / h["perplexity"],
           sample["distinct_word_ratio"], sample["text"]), flush=True)


if __name__ == "__main__":
    main()
