"""Reference values for tests/rnn.rs, printed by PyTorch (2.15, CPU):
`python tests/data/rnn_ref.py > tests/data/rnn_ref.txt`. Every tensor is
filled with 0.5·sin(0.37·i + salt); a parameter's salt is 0.1·numel, so
kiln's test fills its parameters the same way. The loss is
Σ out·r1 + Σ h_n·r2 (+ Σ c_n·r3)."""
import torch

from ref_util import fill, fmt

cases = [
    ("lstm", torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True), [2, 5, 3], True, "weight_hh_l1_reverse"),
    ("gru", torch.nn.GRU(3, 4, num_layers=2), [5, 2, 3], False, "bias_hh_l1"),
    ("gru_bi", torch.nn.GRU(3, 4, bidirectional=True, bias=False, batch_first=True), [2, 4, 3], True, "weight_hh_l0_reverse"),
    # batches that kiln runs as several blocks of rows (3 of 16, 2 of 16)
    ("lstm_blocks", torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True), [48, 3, 3], True, "weight_hh_l0"),
    ("gru_blocks", torch.nn.GRU(3, 4), [3, 32, 3], True, "weight_ih_l0"),
]
for name, m, shape, with_state, pname in cases:
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(fill(list(p.shape), 0.1 * p.numel()))
    x = fill(shape, 1.0).requires_grad_()
    states = m.num_layers * (2 if m.bidirectional else 1)
    n = shape[0] if m.batch_first else shape[1]
    h0 = fill([states, n, 4], 4.0).requires_grad_()
    c0 = fill([states, n, 4], 5.0).requires_grad_()
    if isinstance(m, torch.nn.LSTM):
        out, (hn, cn) = m(x, (h0, c0)) if with_state else m(x)
    else:
        out, hn = m(x, h0) if with_state else m(x)
        cn = None
    loss = (out * fill(list(out.shape), 2.0)).sum() + (hn * fill(list(hn.shape), 3.0)).sum()
    if cn is not None:
        loss = loss + (cn * fill(list(cn.shape), 6.0)).sum()
    loss.backward()
    print(f"// {name}")
    print("out", fmt(out))
    print("h_n", fmt(hn))
    if cn is not None:
        print("c_n", fmt(cn))
    print("gx", fmt(x.grad))
    print("gp", fmt(dict(m.named_parameters())[pname].grad))
    if with_state:
        print("gh0", fmt(h0.grad))
