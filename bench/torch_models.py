"""The PyTorch forms of kiln's built-in `resnet`, `lstm` and `transformer` models, shared
by the scripts in this folder. Import it after the thread count is set (it
imports torch)."""
import torch
from torch import nn


class RowLstm(nn.Module):
    """LSTM(28 -> 128) over the 28 rows of a 1x28x28 image, then linear 128 -> 10."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(28, 128, batch_first=True)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        _, (h, _) = self.lstm(x.view(x.shape[0], 28, 28))
        return self.fc(h[-1])


class CharTransformer(nn.Module):
    """Embedding + learned positions (d_model 64), two pre-norm causal encoder
    layers (4 heads, feed-forward 256, no dropout), a final LayerNorm and a
    linear head, over `vocab` symbols and a context of 64."""

    def __init__(self, vocab=65, d=64, context=64):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(context, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(d), enable_nested_tensor=False)
        self.head = nn.Linear(d, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context))

    def forward(self, ids):
        h = self.encoder(self.tok(ids) + self.pos, mask=self.mask, is_causal=True)
        return self.head(h)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        s = x if self.downsample is None else self.downsample(x)
        return torch.relu(h + s)


def resnet(blocks):
    layers = [nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for stage, width in enumerate([16, 32, 64]):
        for b in range(blocks):
            layers.append(BasicBlock(cin, width, 2 if stage > 0 and b == 0 else 1))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)
