#!/usr/bin/env python3
"""The PyTorch side of `kiln bench`'s ResNet-8, LSTM and Transformer training-step rows:
the same models, batch and optimiser (SGD, lr 0.01, momentum 0.9), one
training step timed per sample, median printed (after 10 warm-up steps);
and of the Transformer forward row: the model in evaluation mode under
`torch.no_grad()`, one forward pass per sample.

    python bench/pytorch_steps.py --threads 2

`resnet`: ResNet-8 (as `kiln train --model resnet`) on [32, 1, 28, 28] images,
cross-entropy against 32 labels.
`lstm`: LSTM(28 -> 128) over the rows of [32, 1, 28, 28] images, its last
hidden state to linear 128 -> 10, cross-entropy against 32 labels.
`transformer`: a character model on ids [16, 64] over 65 symbols: embedding
65 -> 64 plus learned positions, two pre-norm causal encoder layers (4 heads,
feed-forward 256, no dropout), a final LayerNorm, linear 64 -> 65,
cross-entropy against the 1,024 next characters.
"""
import argparse
import os
import time

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--steps", type=int, default=200)
a = ap.parse_args()
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(a.threads)
import torch  # noqa: E402
from torch import nn  # noqa: E402

from torch_models import CharTransformer, RowLstm, resnet  # noqa: E402

torch.set_num_threads(a.threads)
torch.manual_seed(0)


def time_steps(name, model, x, y, loss_of):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    times = []
    for _ in range(args_steps + 10):
        t = time.perf_counter()
        opt.zero_grad()
        loss = loss_of(model(x), y)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    times = sorted(times[10:])
    print(f"{name:12s} train_step median {times[len(times) // 2] * 1e3:.2f} ms "
          f"({sum(p.numel() for p in model.parameters())} parameters, {torch.get_num_threads()} threads)")


def time_forward(name, model, x):
    model.eval()
    times = []
    with torch.no_grad():
        for _ in range(args_steps + 10):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    times = sorted(times[10:])
    print(f"{name:12s} forward median {times[len(times) // 2] * 1e3:.2f} ms "
          f"(evaluation, no_grad, {torch.get_num_threads()} threads)")


args_steps = a.steps
ce = nn.functional.cross_entropy
time_steps("ResNet-8", resnet(1), torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,)), ce)
time_steps("LSTM", RowLstm(), torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,)), ce)
time_steps("Transformer", CharTransformer(), torch.randint(0, 65, (16, 64)), torch.randint(0, 65, (16 * 64,)),
           lambda logits, y: ce(logits.reshape(-1, 65), y))
time_forward("Transformer", CharTransformer(), torch.randint(0, 65, (16, 64)))
