"""Attention in a path count: values through their projection, uniform token mixing over the
keys a query may attend to, the masked output projection (nn.MultiheadAttention and
torchvision's shifted window attention). Functions of a PathNetwork `net` and a graph node."""
import torch
import torch.fx as fx
import torch.nn.functional as F

def multihead(net, node, m, args, kwargs):
    """nn.MultiheadAttention(x, x, x): values through the v rows of the input projection,
    uniform mixing over the tokens, masked output projection. Returns (out, None)."""
    q = args[0] if args else kwargs["query"]
    k = args[1] if len(args) > 1 else kwargs.get("key")
    v = args[2] if len(args) > 2 else kwargs.get("value")
    if not (q is k is v):
        raise net._unknown(node, "nn.MultiheadAttention with different query, key and value")
    if kwargs.get("attn_mask") is not None or kwargs.get("key_padding_mask") is not None:
        raise net._unknown(node, "nn.MultiheadAttention with a mask")
    e, base = m.embed_dim, node.target
    if m.in_proj_weight is not None:
        name, rows = f"{base}.in_proj_weight", 2 * e
        w = net._weight(name, m.in_proj_weight.shape, q.device)[rows:]
    else:
        name, rows = f"{base}.v_proj_weight", 0
        w = net._weight(name, m.v_proj_weight.shape, q.device)
    values = net._masked(name, q, lambda x: F.linear(x, w), rows)
    mixed = net._mix(values, 1 if m.batch_first else 0)
    out_name = f"{base}.out_proj"
    w_out = net._weight(out_name, m.out_proj.weight.shape, q.device)
    return net._masked(out_name, mixed, lambda x: F.linear(x, w_out)), None



def shifted_window(net, node, x, qkv_weight, proj_weight, relative_position_bias,
                    window_size, num_heads, shift_size, *rest, **kwargs):
    """torchvision's shifted window attention: values (v rows of qkv), uniform mixing over
    the tokens of a window that the attention mask lets attend to each other (the
    same region after the cyclic shift), masked output projection."""
    names = []
    for arg in node.args[1:3]:
        if not (isinstance(arg, fx.Node) and arg.op == "get_attr" and arg.target.endswith(".weight")):
            raise net._unknown(node, "shifted_window_attention with computed weights")
        names.append(arg.target[: -len(".weight")])
    qkv_name, proj_name = names
    b, h, w_, c = x.shape
    ws = list(window_size)
    pad_r, pad_b = (ws[1] - w_ % ws[1]) % ws[1], (ws[0] - h % ws[0]) % ws[0]
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    ph, pw = x.shape[1], x.shape[2]
    shift = list(shift_size)
    if ws[0] >= ph:
        shift[0] = 0
    if ws[1] >= pw:
        shift[1] = 0
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    nw = (ph // ws[0]) * (pw // ws[1])
    x = x.view(b, ph // ws[0], ws[0], pw // ws[1], ws[1], c).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(b * nw, ws[0] * ws[1], c)
    w_qkv = net._weight(qkv_name, net.modules[qkv_name].weight.shape, x.device)[2 * c:]
    v = net._masked(qkv_name, x, lambda t: F.linear(t, w_qkv), 2 * c)
    # which tokens of a window see each other: the attention mask's regions
    region = torch.zeros(ph, pw, dtype=v.dtype, device=v.device)
    if sum(shift) > 0:
        count = 0
        for hs in ((0, -ws[0]), (-ws[0], -shift[0]), (-shift[0], None)):
            for wsl in ((0, -ws[1]), (-ws[1], -shift[1]), (-shift[1], None)):
                region[hs[0]:hs[1], wsl[0]:wsl[1]] = count
                count += 1
    region = region.view(ph // ws[0], ws[0], pw // ws[1], ws[1]).permute(0, 2, 1, 3)
    region = region.reshape(nw, ws[0] * ws[1])
    attend = (region[:, :, None] == region[:, None, :]).to(v.dtype)   # nw, T, T
    if net.mode == "reference":
        attend = attend / attend.sum(-1, keepdim=True)
    v = v.view(b, nw, ws[0] * ws[1], c)
    mixed = torch.einsum("nij,bnjc->bnic", attend, v).reshape(b * nw, ws[0] * ws[1], c)
    w_proj = net._weight(proj_name, net.modules[proj_name].weight.shape, x.device)
    out = net._masked(proj_name, mixed, lambda t: F.linear(t, w_proj))
    out = out.view(b, ph // ws[0], pw // ws[1], ws[0], ws[1], c).permute(0, 1, 3, 2, 4, 5)
    out = out.reshape(b, ph, pw, c)
    if sum(shift) > 0:
        out = torch.roll(out, shifts=(shift[0], shift[1]), dims=(1, 2))
    return out[:, :h, :w_, :].contiguous()

