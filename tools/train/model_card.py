"""The model card (README.md) written beside the trained checkpoint, from its measured figures."""

TEMPLATE = """# kjv-mamba: mambaserve's default model

A small Mamba-1 language model trained on the King James Version of the Bible. It is what
`mambaserve serve` runs when no `--model` is given: a demonstration that the server streams real
text the moment it is built, and a checkpoint whose perplexity the engine must reproduce exactly.
**It is a demo, not a product model**: it knows one book, in 17th-century English, and nothing else.

| | |
|---|---|
| Architecture | Mamba-1 (`MambaForCausalLM` layout), {layers} layers, hidden {hidden}, inner {inner}, d_state {state}, d_conv {conv}, dt_rank {rank}, tied embeddings |
| Parameters | {params:,} ({size_mb:.1f} MB in float32) |
| Tokenizer | byte-level BPE, {vocab:,} tokens, trained on the same training text with Hugging Face `tokenizers`; `<|endoftext|>` = 0 |
| Training data | {train_tokens:,} tokens: the KJV minus the held-out chapters |
| Held-out data | `heldout.txt`: every 50th chapter (from the 26th), {heldout_tokens:,} tokens |
| Training | {steps} steps of {batch} x {seq_len} tokens, AdamW, peak learning rate {lr}, seed {seed}, {threads} CPU threads, {minutes:.1f} minutes ({machine}) |

## Results (float64, computed by the training script)

| | mean NLL (nats/token) | perplexity |
|---|---|---|
| held-out, windows of {context} tokens | {nll:.4f} | **{ppl:.2f}** |
| unigram model of the training tokens, same held-out tokens | {uni_nll:.4f} | {uni_ppl:.1f} ({ratio:.1f}x higher) |
| a training slice of the same size | {train_nll:.4f} | {train_ppl:.2f} |

Greedy continuation of the card's fixed prompt `{prompt}` ({sample_tokens} tokens, distinct-word
ratio {distinct:.2f}):

> {sample}

Greedy decoding of a model this small drifts into repeating phrases; the same measure for other
prompts (sample with a temperature for varied text):

| prompt | distinct-word ratio | continuation begins |
|---|---|---|
{others}

mambaserve reproduces the held-out figure:

    mambaserve perplexity --model models/kjv-mamba --text-file models/kjv-mamba/heldout.txt --context {context}

## Data and licence

The text comes from Debian's `bible-kjv-text` package (read with the `bible` program of
`bible-kjv`). The King James Version was published in 1611; its copyright has expired and the
text is in the public domain. The weights, tokenizer and this card are distributed with
mambaserve under its licence.

## Reproducing

    tools/train/run.sh

installs what is missing (Debian's `python3-torch`, CPU only, and `bible-kjv`; `tokenizers` and
`safetensors` from PyPI into a virtual environment) and runs `{command}`. Training is
deterministic for a given seed and thread count.
"""


def render(config, evaluation):
    h, t, s = evaluation["heldout"], evaluation["training"], evaluation["greedy_sample"]
    args = t["args"]
    return TEMPLATE.format(
        layers=config["num_hidden_layers"], hidden=config["hidden_size"],
        inner=config["intermediate_size"], state=config["state_size"], conv=config["conv_kernel"],
        rank=config["time_step_rank"], params=t["parameters"], size_mb=t["parameters"] * 4 / 1e6,
        vocab=config["vocab_size"], train_tokens=t["train_tokens"], heldout_tokens=h["tokens"],
        steps=args["steps"], batch=args["batch"], seq_len=args["seq_len"], lr=args["lr"],
        seed=args["seed"], threads=args["threads"], minutes=t["train_seconds"] / 60,
        machine=t["machine"], context=h["context"], nll=h["mean_nll"], ppl=h["perplexity"],
        uni_nll=h["unigram_mean_nll"], uni_ppl=h["unigram_perplexity"],
        ratio=h["unigram_perplexity"] / h["perplexity"],
        train_nll=evaluation["train_slice"]["mean_nll"],
        train_ppl=evaluation["train_slice"]["perplexity"], prompt=s["prompt"],
        sample_tokens=len(s["token_ids"]), distinct=s["distinct_word_ratio"],
        sample=s["prompt"] + s["text"].replace("\n", " "), command=t["command"],
        others="\n".join("| `%s` | %.2f | %s... |" % (o["prompt"], o["distinct_word_ratio"],
                                                      o["text"].replace("\n", " ")[:60])
                         for o in evaluation["other_greedy_samples"]))
