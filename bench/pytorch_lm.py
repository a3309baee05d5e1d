#!/usr/bin/env python3
"""The PyTorch side of `kiln train --model transformer`: the same character
language model, text, vocabulary, split, batch, optimiser and thread count.

    python bench/pytorch_lm.py --data target/shakespeare.txt --steps 2000 \
        --optimizer adamw --lr 0.002 --batch-size 32

The vocabulary is the text's distinct characters sorted by code point; the
first 90% is for training, the rest for validation (as `kiln::data::CharCorpus`).
Each step draws --batch-size random windows of 64 characters; the loss is the
mean cross-entropy of the next character at every position. The model is
`models::CharTransformer`: embedding + learned positions (d_model 64), two
pre-norm causal encoder layers (4 heads, feed-forward 256, no dropout), a
final LayerNorm and a linear head. Prints the validation loss ten times, the
throughput of the training steps alone (tokens/s), the final validation loss
over 64 batches, a sample of text and the peak resident memory (ru_maxrss).
Initial weights and the windows drawn differ from kiln's (different random
streams). Threads: --threads (default 2), set before torch is imported.
"""
import argparse
import os
import resource
import time

ap = argparse.ArgumentParser()
ap.add_argument("--data", required=True)
ap.add_argument("--steps", type=int, default=2000)
ap.add_argument("--batch-size", type=int, default=32)
ap.add_argument("--lr", type=float, default=0.01)
ap.add_argument("--momentum", type=float, default=0.9)
ap.add_argument("--weight-decay", type=float, default=0.0)
ap.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adamw"])
ap.add_argument("--sample", type=int, default=500)
ap.add_argument("--temperature", type=float, default=0.8)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(a.threads)
import torch  # noqa: E402
from torch import nn  # noqa: E402

from torch_models import CharTransformer  # noqa: E402

torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
CONTEXT = 64

text = open(a.data, encoding="utf-8").read()
vocab = sorted(set(text))
index = {c: i for i, c in enumerate(vocab)}
ids = torch.tensor([index[c] for c in text])
split = max(len(text) * 9 // 10, 1)
parts = {"train": ids[:split], "val": ids[split:]}


def batch(part, gen):
    data = parts[part]
    starts = torch.randint(0, len(data) - CONTEXT, (a.batch_size,), generator=gen)
    x = torch.stack([data[s : s + CONTEXT] for s in starts])
    y = torch.stack([data[s + 1 : s + CONTEXT + 1] for s in starts])
    return x, y.reshape(-1)


model = CharTransformer(len(vocab))
if a.optimizer == "sgd":
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay)
elif a.optimizer == "adam":
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
else:
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
ce = nn.functional.cross_entropy


@torch.no_grad()
def val_loss(batches, seed):
    gen = torch.Generator().manual_seed(seed)
    return sum(ce(model(x).reshape(-1, len(vocab)), y).item() for x, y in (batch("val", gen) for _ in range(batches))) / batches


params = sum(p.numel() for p in model.parameters())
print(f"training transformer ({params} parameters) on {a.data} ({split} train / {len(text) - split} validation "
      f"characters, vocabulary {len(vocab)}), batch {a.batch_size} x {CONTEXT}, {a.steps} steps, lr {a.lr}")
gen = torch.Generator().manual_seed(a.seed ^ 0xC0FFEE)
stepping = 0.0
every = max(a.steps // 10, 1)
t0 = time.perf_counter()
for step in range(1, a.steps + 1):
    x, y = batch("train", gen)
    started = time.perf_counter()
    opt.zero_grad()
    loss = ce(model(x).reshape(-1, len(vocab)), y)
    loss.backward()
    opt.step()
    stepping += time.perf_counter() - started
    if step % every == 0 or step == a.steps:
        print(f"step {step}: training loss {loss.item():.4f}, validation loss {val_loss(8, a.seed):.4f}", flush=True)
tokens = a.steps * a.batch_size * CONTEXT
print(f"{a.steps} steps in {stepping:.1f} s: {tokens / stepping:.0f} tokens/s (training steps only), "
      f"{stepping * 1e3 / a.steps:.2f} ms per step")
print(f"validation loss: {val_loss(64, ~a.seed & 0xFFFFFFFF):.4f} ({64 * a.batch_size} windows)")
context = [int(i) for i in parts["val"][: int((parts["val"] == vocab.index("\n")).nonzero()[0]) + 1]] if "\n" in vocab else [0]
with torch.no_grad():
    for _ in range(a.sample):
        window = context[-CONTEXT:]
        x = torch.tensor([window + [0] * (CONTEXT - len(window))])
        logits = model(x)[0, len(window) - 1] / a.temperature
        context.append(int(torch.multinomial(torch.softmax(logits, -1), 1)))
print(f"sample (temperature {a.temperature}):\n" + "".join(vocab[i] for i in context))
print(f"total time: {time.perf_counter() - t0:.1f} s")
print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
