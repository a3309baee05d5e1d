"""Reference values for tests/conv_transpose.rs, printed by PyTorch (2.15,
CPU): `python tests/data/conv_transpose_ref.py > tests/data/conv_transpose_ref.txt`.
Every tensor is filled with 0.5·sin(0.37·i + salt); a parameter's salt is
0.1·numel, so kiln's test fills its parameters the same way."""
import torch

from ref_util import print_layer_cases

cases = [
    ("a", torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2), [2, 4, 3, 5]),
    ("b", torch.nn.ConvTranspose2d(3, 2, (2, 3), stride=(1, 2), dilation=2, output_padding=1), [1, 3, 4, 3]),
    ("c", torch.nn.ConvTranspose1d(2, 3, 4, stride=3, padding=2, output_padding=2, bias=False), [2, 2, 5]),
]
print_layer_cases(cases)
