#!/usr/bin/env python3
"""The PyTorch side of `kiln train`: the same classifier, data, batch, optimiser,
schedule and thread count, for a side-by-side comparison.

    python bench/pytorch_train.py --model resnet --data ../shared/data/fashion-mnist \
        --epochs 10 --lr 0.05 --schedule onecycle --weight-decay 5e-4

Models as `kiln::models::classifier` builds them: `cnn`, `mlp`, `resnet` (ResNet-8),
`resnet20` and `lstm` (an LSTM over the image's 28 rows, its last hidden state to a
linear layer). Pixels are scaled to [0, 1]; each epoch visits the training set in a
seeded random order in batches of --batch-size, dropping a last partial batch (as
`kiln train`); the schedule steps once per batch. Prints one line per epoch (mean
loss, seconds, images/s), the test accuracy, and the peak resident memory of the
process (ru_maxrss). Initial weights and shuffling differ from kiln's (different
random streams); everything else is the same. Threads: --threads (default 2), set
before torch is imported.
"""
import argparse
import gzip
import os
import resource
import struct
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="cnn")
ap.add_argument("--data", required=True)
ap.add_argument("--epochs", type=int, default=8)
ap.add_argument("--batch-size", type=int, default=32)
ap.add_argument("--lr", type=float, default=0.01)
ap.add_argument("--momentum", type=float, default=0.9)
ap.add_argument("--weight-decay", type=float, default=0.0)
ap.add_argument("--schedule", default="constant", choices=["constant", "cosine", "onecycle"])
ap.add_argument("--warmup-epochs", type=int, default=0)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(a.threads)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from torch_models import RowLstm, resnet  # noqa: E402

torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)


def idx(path):
    """An IDX file (gzipped or not) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = struct.unpack(">" + "I" * dims, raw[4 : 4 + 4 * dims])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def find(prefixes, kind):
    for p in prefixes:
        for ext in ("-%s-idx%d-ubyte.gz" % (kind, 3 if kind == "images" else 1),
                    "-%s-idx%d-ubyte" % (kind, 3 if kind == "images" else 1)):
            path = os.path.join(a.data, p + ext)
            if os.path.exists(path):
                return path
    sys.exit("no %s %s file in %s" % ("/".join(prefixes), kind, a.data))


def load(prefixes):
    x = idx(find(prefixes, "images")).astype(np.float32) / 255.0
    y = idx(find(prefixes, "labels")).astype(np.int64)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)


xtr, ytr = load(["train"])
xte, yte = load(["t10k", "test"])


models = {
    "cnn": lambda: nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10)),
    "mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)),
    "resnet": lambda: resnet(1),
    "resnet20": lambda: resnet(3),
    "lstm": RowLstm,
}
net = models[a.model]()
opt = torch.optim.SGD(net.parameters(), lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay)
per_epoch = len(xtr) // a.batch_size
total = per_epoch * a.epochs
sched = None
if a.schedule == "onecycle":
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=total,
                                                cycle_momentum=False)
elif a.schedule == "cosine":
    warm = a.warmup_epochs * per_epoch

    def factor(t):
        if t < warm:
            return t / max(1, warm)
        return 0.5 * (1 + np.cos(np.pi * min(1.0, (t - warm) / max(1, total - warm))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
loss_fn = nn.CrossEntropyLoss()
print("training %s (%d parameters) with torch %s, %d threads, batch %d, %d epochs, lr %g %s"
      % (a.model, sum(p.numel() for p in net.parameters()), torch.__version__,
         torch.get_num_threads(), a.batch_size, a.epochs, a.lr, a.schedule))
gen = torch.Generator().manual_seed(a.seed)
start = time.time()
for epoch in range(a.epochs):
    net.train()
    order = torch.randperm(len(xtr), generator=gen)
    t0, total_loss = time.time(), 0.0
    for k in range(per_epoch):
        rows = order[k * a.batch_size:(k + 1) * a.batch_size]
        x, y = xtr[rows], ytr[rows]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        total_loss += loss.item()
    secs = time.time() - t0
    print("epoch %d/%d: mean loss %.4f, %.1f s, %.0f images/s"
          % (epoch + 1, a.epochs, total_loss / per_epoch, secs, per_epoch * a.batch_size / secs))
net.eval()
correct = 0
with torch.no_grad():
    for k in range(0, len(xte), a.batch_size):
        correct += (net(xte[k:k + a.batch_size]).argmax(1) == yte[k:k + a.batch_size]).sum().item()
print("total time: %.1f s" % (time.time() - start))
print("test accuracy: %.4f" % (correct / len(xte)))
print("peak RSS: %.1f MiB" % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
