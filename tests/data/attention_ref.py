"""Reference values for tests/attention.rs, printed by PyTorch (2.15, CPU):
`python tests/data/attention_ref.py > tests/data/attention_ref.txt`.
Every tensor is filled with 0.5·sin(0.37·i + salt); a parameter's salt is
0.1·numel, so kiln's test fills its parameters the same way by name."""
import torch, math
torch.set_printoptions(precision=8)
def fill(t, salt):
    n = t.numel()
    v = torch.tensor([0.5*math.sin(0.37*i + salt) for i in range(n)], dtype=torch.float64).reshape(t.shape)
    return v
def setp(m):
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.copy_(fill(p, 0.1*p.numel()).float())
def fmt(t): return "[" + ", ".join(f"{v:.8e}" for v in t.detach().flatten().tolist()) + "]"
# SDPA
q = fill(torch.empty(2,3,4), 0.0).float().requires_grad_()
k = fill(torch.empty(2,5,4), 1.0).float().requires_grad_()
v = fill(torch.empty(2,5,3), 2.0).float().requires_grad_()
allow = torch.tensor([[1,0,1,1,0],[1,1,1,0,0],[0,0,0,1,1]], dtype=torch.bool)
r = fill(torch.empty(2,3,3), 3.0).float()
for name, kw in [("mask", dict(attn_mask=allow)), ("causal", dict(is_causal=True)), ("scale", dict(scale=0.3))]:
    for t in (q,k,v): t.grad=None
    o = torch.nn.functional.scaled_dot_product_attention(q,k,v,**kw)
    (o*r).sum().backward()
    print(f"// sdpa {name}"); print("out", fmt(o)); print("gq", fmt(q.grad)); print("gk", fmt(k.grad)); print("gv", fmt(v.grad))
# MHA [L,N,E] = [3,2,4]
torch.manual_seed(0)
mha = torch.nn.MultiheadAttention(4, 2)
setp(mha)
x = fill(torch.empty(3,2,4), 4.0).float().requires_grad_()
kpm = torch.tensor([[False, False, True],[False, False, False]])
o, w = mha(x, x, x, key_padding_mask=kpm)
r = fill(torch.empty(3,2,4), 5.0).float()
(o*r).sum().backward()
print("// mha"); print("out", fmt(o)); print("weights", fmt(w)); print("gx", fmt(x.grad))
print("g_in_proj", fmt(mha.in_proj_weight.grad))
# encoder layers
for name, kw, causal in [("post_relu", dict(), False), ("pre_gelu", dict(norm_first=True, activation="gelu"), True)]:
    layer = torch.nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.0, batch_first=True, **kw)
    setp(layer)
    x = fill(torch.empty(2,3,4), 6.0).float().requires_grad_()
    mask = torch.nn.Transformer.generate_square_subsequent_mask(3) if causal else None
    y = layer(x, src_mask=mask, is_causal=causal)
    r = fill(torch.empty(2,3,4), 7.0).float()
    (y*r).sum().backward()
    print(f"// encoder {name}"); print("out", fmt(y)); print("gx", fmt(x.grad)); print("g_linear1", fmt(layer.linear1.weight.grad))
