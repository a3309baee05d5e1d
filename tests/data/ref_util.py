"""Helpers the reference scripts in this folder share."""
import math

import torch


def fill(shape, salt):
    """0.5·sin(0.37·i + salt) over `shape`, computed in float64, as float32."""
    n = math.prod(shape)
    return torch.tensor([0.5 * math.sin(0.37 * i + salt) for i in range(n)], dtype=torch.float64).reshape(shape).float()


def fmt(t):
    """A tensor's values as `[v, v, ..]` with 9 significant digits."""
    return "[" + ", ".join(f"{v:.8e}" for v in t.detach().flatten().tolist()) + "]"
