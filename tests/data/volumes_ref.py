"""Reference values for tests/volumes.rs, printed by PyTorch (2.15, CPU):
`python tests/data/volumes_ref.py > tests/data/volumes_ref.txt`. 3-D
convolutions and pools, and the 1-D pools. Every tensor is filled with
0.5·sin(0.37·i + salt); a parameter's salt is 0.1·numel, so kiln's test
fills its parameters the same way. The loss is Σ y·r with r filled with salt 2."""
import torch

from ref_util import print_layer_cases

nn = torch.nn
cases = [
    ("conv3d_a", nn.Conv3d(2, 4, (2, 3, 2), stride=(1, 2, 1), padding=(1, 0, 1), groups=2), [2, 2, 4, 5, 5]),
    ("conv3d_b", nn.Conv3d(3, 2, 2, padding=1, dilation=2, bias=False), [1, 3, 4, 4, 3]),
    ("convt3d", nn.ConvTranspose3d(4, 2, 2, stride=2, output_padding=1), [1, 4, 2, 3, 2]),
    ("maxpool3d_a", nn.MaxPool3d(2, stride=2, padding=1, ceil_mode=True), [2, 3, 5, 4, 5]),
    ("maxpool3d_b", nn.MaxPool3d(3, stride=2, padding=1, dilation=2), [1, 2, 6, 7, 6]),
    ("avgpool3d_a", nn.AvgPool3d((2, 2, 3), stride=(1, 2, 2), padding=1, ceil_mode=True, count_include_pad=False), [2, 2, 4, 5, 6]),
    ("avgpool3d_b", nn.AvgPool3d(3, stride=2, padding=1), [1, 2, 5, 5, 5]),
    ("maxpool1d", nn.MaxPool1d(3, stride=2, padding=1, ceil_mode=True), [2, 3, 10]),
    ("avgpool1d", nn.AvgPool1d(4, stride=3, padding=2, ceil_mode=True, count_include_pad=False), [2, 2, 11]),
]
print_layer_cases(cases)
