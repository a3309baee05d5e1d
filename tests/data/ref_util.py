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


def print_layer_cases(cases):
    """For each `(name, module, input shape)`: the module's parameters filled
    with salt 0.1·numel, the input with salt 1, the loss Σ y·r with r of salt
    2; prints the output's shape, the output and the gradients of input,
    weight and bias (those the module has) under `// name`."""
    for name, m, shape in cases:
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(fill(list(p.shape), 0.1 * p.numel()))
        x = fill(shape, 1.0).requires_grad_()
        y = m(x)
        r = fill(list(y.shape), 2.0)
        (y * r).sum().backward()
        print(f"// {name}")
        print("shape", list(y.shape))
        print("out", fmt(y))
        print("gx", fmt(x.grad))
        if getattr(m, "weight", None) is not None:
            print("gw", fmt(m.weight.grad))
        if getattr(m, "bias", None) is not None:
            print("gb", fmt(m.bias.grad))
