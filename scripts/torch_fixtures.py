#!/usr/bin/env python3
"""Generate PyTorch reference fixtures for tapegrad's RNN / LSTM / GRU layers.

Purpose
-------
tapegrad's recurrent layers must reproduce ``torch.nn.RNN``, ``torch.nn.LSTM``
and ``torch.nn.GRU`` exactly when given the same ``state_dict`` numbers. This
script runs PyTorch once, in float64, and writes JSON fixtures that the Rust
tests compare against (tolerance 1e-9). The JSON files are committed, so CI
and developers do NOT need torch (or this script) to run the Rust tests.

How to run (only needed to regenerate the fixtures)
---------------------------------------------------
From the repository root::

    pip install torch numpy        # plain PyPI wheels, CPU is enough
    python3 scripts/torch_fixtures.py

Output (overwritten on every run; the run is deterministic, with
``torch.manual_seed`` set per case)::

    tests/fixtures/torch_rnn.json
    tests/fixtures/torch_lstm.json
    tests/fixtures/torch_gru.json
    tests/fixtures/torch_{proj_lstm,ln_lstm,peephole_lstm}.json   (LSTM variants)

Regenerating on another CPU or BLAS build can change the last bit of
outputs and gradients (MKL picks kernels by CPU; inputs and weights are
identical, seeded): the 2026-12-07 rerun differed from the committed
RNN/LSTM/GRU files by at most 3e-15 relative, so those files were kept.

After writing, the script reloads every file and re-checks each case against
an independent numpy implementation of the formulas below (forward to 1e-12)
and the gradients against central finite differences on a few entries.

File format
-----------
``{"generator": "scripts/torch_fixtures.py", "torch_version": str, "cases": [case...]}``

Each tensor is ``{"shape": [...], "data": [...]}`` with ``data`` flattened
row-major (C order); floats are written with ``repr`` so they round-trip
float64 exactly. Each case::

    name, mode ("RNN_TANH" | "RNN_RELU" | "LSTM" | "GRU"), input_size,
    hidden_size, num_layers, bidirectional, batch, seq_len,
    params:  {state_dict name: tensor}   (exact PyTorch names)
    x:       [T, B, I]                   (batch_first=False)
    h0:      [L*D, B, H]
    c0:      [L*D, B, H] (LSTM) | null
    output:  [T, B, D*H]
    h_n:     [L*D, B, H]
    c_n:     [L*D, B, H] (LSTM) | null
    loss_weights: {"output": R, "h_n": S, "c_n": Sc (LSTM only)}
    loss:    sum(output*R) + sum(h_n*S) (+ sum(c_n*Sc) for LSTM)
    grads:   {every param name, "x", "h0", "c0" (LSTM only)}: d loss / d that

(L = num_layers, D = 2 if bidirectional else 1.)

Verified PyTorch semantics (checked by ``verify_case`` on every case)
--------------------------------------------------------------------
Parameters, per layer l and direction suffix s ("" forward, "_reverse"):
  ``weight_ih_l{l}{s}``: [G*H, I_l], ``weight_hh_l{l}{s}``: [G*H, H],
  ``bias_ih_l{l}{s}``: [G*H], ``bias_hh_l{l}{s}``: [G*H]; G = 1 (RNN),
  4 (LSTM), 3 (GRU). I_0 = input_size, I_l = D*H for l >= 1.
  Both biases always exist and are simply added (they are NOT merged in the
  file); for GRU the hh bias of the n gate sits inside the r product.
  Gate blocks are row slices of size H in the order given below.

RNN:  h' = act(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh), act = tanh or relu.
LSTM: gates ordered i, f, g, o:
      [i f g o] = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh
      i, f, o = sigmoid(.), g = tanh(.)
      c' = f ⊙ c + i ⊙ g ;  h' = o ⊙ tanh(c')
GRU:  gates ordered r, z, n:
      r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
      z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
      n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
      h' = (1 − z) ⊙ n + z ⊙ h

Bidirectional / stacked layout:
  * output[t, b, :H] is the forward direction of the LAST layer, output[t, b, H:]
    the reverse direction. The reverse direction consumes the sequence from
    t = T−1 down to 0 (starting from its own h0/c0 slot) and its output at
    position t is the hidden state after it consumed input t (aligned with
    input t, i.e. NOT flipped back).
  * h_n / c_n (and h0 / c0) index = l*D + d, i.e. layer-major:
    [l0_fwd, l0_rev, l1_fwd, l1_rev, ...]. h_n forward = forward state after
    t = T−1 (= output[T−1, :, :H] for the last layer); h_n reverse = reverse
    state after t = 0 (= output[0, :, H:] for the last layer).
  * Layer l >= 1 takes as input the full output sequence of layer l−1, i.e. the
    concatenation [fwd, rev] along the feature axis (size D*H), for both of its
    directions.
  * No dropout (dropout=0); proj_size only in the LSTM variants below.
"""

import json
import os
import sys

import numpy as np
import torch

torch.set_default_dtype(torch.float64)

GENERATOR = "scripts/torch_fixtures.py"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(REPO_ROOT, "tests", "fixtures")

# (name, mode, input_size, hidden_size, num_layers, bidirectional, batch, seq_len, seed)
RNN_CASES = [
    ("rnn_tanh_1layer", "RNN_TANH", 3, 4, 1, False, 2, 4, 101),
    ("rnn_relu_1layer", "RNN_RELU", 3, 4, 1, False, 2, 5, 102),
    ("rnn_tanh_2layer", "RNN_TANH", 3, 4, 2, False, 2, 4, 103),
    ("rnn_tanh_bidir_1layer", "RNN_TANH", 3, 4, 1, True, 2, 4, 104),
    ("rnn_tanh_bidir_2layer", "RNN_TANH", 3, 4, 2, True, 2, 3, 105),
    ("rnn_tanh_b1_t1", "RNN_TANH", 3, 4, 1, False, 1, 1, 106),
    ("rnn_relu_bidir_2layer_b1", "RNN_RELU", 3, 4, 2, True, 1, 5, 107),
]
LSTM_CASES = [
    ("lstm_1layer", "LSTM", 3, 4, 1, False, 2, 4, 201),
    ("lstm_2layer", "LSTM", 3, 4, 2, False, 2, 4, 202),
    ("lstm_bidir_1layer", "LSTM", 3, 4, 1, True, 2, 4, 203),
    ("lstm_bidir_2layer", "LSTM", 3, 4, 2, True, 2, 3, 204),
    ("lstm_b1_t1", "LSTM", 3, 4, 1, False, 1, 1, 205),
]
GRU_CASES = [
    ("gru_1layer", "GRU", 3, 4, 1, False, 2, 4, 301),
    ("gru_2layer", "GRU", 3, 4, 2, False, 2, 4, 302),
    ("gru_bidir_1layer", "GRU", 3, 4, 1, True, 2, 4, 303),
    ("gru_bidir_2layer", "GRU", 3, 4, 2, True, 2, 3, 304),
    ("gru_b1_t1", "GRU", 3, 4, 1, False, 1, 1, 305),
]


def tensor_json(t):
    t = t.detach().to(torch.float64).contiguous()
    return {"shape": list(t.shape), "data": [float(v) for v in t.reshape(-1).tolist()]}


def from_json(obj):
    return np.asarray(obj["data"], dtype=np.float64).reshape(obj["shape"])


def build_module(mode, input_size, hidden_size, num_layers, bidirectional):
    kw = dict(
        input_size=input_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=False,
        bias=True,
    )
    if mode == "RNN_TANH":
        return torch.nn.RNN(nonlinearity="tanh", **kw)
    if mode == "RNN_RELU":
        return torch.nn.RNN(nonlinearity="relu", **kw)
    if mode == "LSTM":
        return torch.nn.LSTM(**kw)
    if mode == "GRU":
        return torch.nn.GRU(**kw)
    raise ValueError(mode)


def make_case(name, mode, I, H, L, bidir, B, T, seed):
    torch.manual_seed(seed)
    D = 2 if bidir else 1
    is_lstm = mode == "LSTM"
    m = build_module(mode, I, H, L, bidir).to(torch.float64)
    # Default PyTorch init (uniform(-1/sqrt(H), 1/sqrt(H))), then perturb so that
    # biases are clearly non-zero and no two entries coincide.
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.15 * torch.randn_like(p))

    x = torch.randn(T, B, I, requires_grad=True)
    h0 = torch.randn(L * D, B, H, requires_grad=True)
    c0 = torch.randn(L * D, B, H, requires_grad=True) if is_lstm else None

    if is_lstm:
        output, (h_n, c_n) = m(x, (h0, c0))
    else:
        output, h_n = m(x, h0)
        c_n = None

    R = torch.randn(output.shape)
    S = torch.randn(h_n.shape)
    Sc = torch.randn(c_n.shape) if is_lstm else None
    loss = (output * R).sum() + (h_n * S).sum()
    if is_lstm:
        loss = loss + (c_n * Sc).sum()

    names = [n for n, _ in m.named_parameters()]
    sd = m.state_dict()
    assert list(sd.keys()) == names, (list(sd.keys()), names)
    wrt = [p for _, p in m.named_parameters()] + [x, h0] + ([c0] if is_lstm else [])
    grads = torch.autograd.grad(loss, wrt)
    grad_names = names + ["x", "h0"] + (["c0"] if is_lstm else [])

    return {
        "name": name,
        "mode": mode,
        "input_size": I,
        "hidden_size": H,
        "num_layers": L,
        "bidirectional": bidir,
        "batch": B,
        "seq_len": T,
        "params": {n: tensor_json(sd[n]) for n in names},
        "x": tensor_json(x),
        "h0": tensor_json(h0),
        "c0": tensor_json(c0) if is_lstm else None,
        "output": tensor_json(output),
        "h_n": tensor_json(h_n),
        "c_n": tensor_json(c_n) if is_lstm else None,
        "loss_weights": dict(
            {"output": tensor_json(R), "h_n": tensor_json(S)},
            **({"c_n": tensor_json(Sc)} if is_lstm else {}),
        ),
        "loss": float(loss.item()),
        "grads": {n: tensor_json(g) for n, g in zip(grad_names, grads)},
    }


# ---------------------------------------------------------------------------
# Independent numpy reference (documents and checks the semantics above).
# ---------------------------------------------------------------------------

def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def np_cell(mode, x, h, c, w_ih, w_hh, b_ih, b_hh):
    H = h.shape[-1]
    gi = x @ w_ih.T + b_ih
    gh = h @ w_hh.T + b_hh
    if mode == "RNN_TANH":
        return np.tanh(gi + gh), None
    if mode == "RNN_RELU":
        return np.maximum(gi + gh, 0.0), None
    if mode == "LSTM":
        g = gi + gh
        i = _sigmoid(g[:, 0:H])
        f = _sigmoid(g[:, H:2 * H])
        gg = np.tanh(g[:, 2 * H:3 * H])
        o = _sigmoid(g[:, 3 * H:4 * H])
        c2 = f * c + i * gg
        return o * np.tanh(c2), c2
    if mode == "GRU":
        r = _sigmoid(gi[:, 0:H] + gh[:, 0:H])
        z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gi[:, 2 * H:3 * H] + r * gh[:, 2 * H:3 * H])
        return (1.0 - z) * n + z * h, None
    raise ValueError(mode)


def np_forward(mode, L, bidir, params, x, h0, c0):
    T = x.shape[0]
    D = 2 if bidir else 1
    is_lstm = mode == "LSTM"
    layer_in = x
    h_n, c_n = [], []
    for l in range(L):
        outs = []
        for d in range(D):
            s = "_reverse" if d == 1 else ""
            w_ih = params[f"weight_ih_l{l}{s}"]
            w_hh = params[f"weight_hh_l{l}{s}"]
            b_ih = params[f"bias_ih_l{l}{s}"]
            b_hh = params[f"bias_hh_l{l}{s}"]
            idx = l * D + d
            h = h0[idx]
            c = c0[idx] if is_lstm else None
            out = [None] * T
            order = range(T - 1, -1, -1) if d == 1 else range(T)
            for t in order:
                h, c = np_cell(mode, layer_in[t], h, c, w_ih, w_hh, b_ih, b_hh)
                out[t] = h
            outs.append(np.stack(out))
            h_n.append(h)
            c_n.append(c)
        layer_in = np.concatenate(outs, axis=-1)
    return layer_in, np.stack(h_n), (np.stack(c_n) if is_lstm else None)


def np_loss(case, params, x, h0, c0):
    out, hn, cn = np_forward(case["mode"], case["num_layers"], case["bidirectional"],
                             params, x, h0, c0)
    lw = case["loss_weights"]
    loss = (out * from_json(lw["output"])).sum() + (hn * from_json(lw["h_n"])).sum()
    if cn is not None:
        loss += (cn * from_json(lw["c_n"])).sum()
    return loss


def verify_case(case):
    is_lstm = case["mode"] == "LSTM"
    params = {k: from_json(v) for k, v in case["params"].items()}
    x = from_json(case["x"])
    h0 = from_json(case["h0"])
    c0 = from_json(case["c0"]) if is_lstm else None
    T, B, I, H = case["seq_len"], case["batch"], case["input_size"], case["hidden_size"]
    D = 2 if case["bidirectional"] else 1
    L = case["num_layers"]
    assert x.shape == (T, B, I)
    assert h0.shape == (L * D, B, H)

    out, hn, cn = np_forward(case["mode"], L, case["bidirectional"], params, x, h0, c0)
    assert out.shape == (T, B, D * H)
    err = max(np.abs(out - from_json(case["output"])).max(),
              np.abs(hn - from_json(case["h_n"])).max())
    if is_lstm:
        err = max(err, np.abs(cn - from_json(case["c_n"])).max())
    assert err < 1e-12, (case["name"], "forward", err)
    # last-layer h_n relations documented above
    assert np.abs(hn[(L - 1) * D] - out[T - 1, :, :H]).max() == 0.0
    if D == 2:
        assert np.abs(hn[(L - 1) * D + 1] - out[0, :, H:]).max() == 0.0
    lerr = abs(np_loss(case, params, x, h0, c0) - case["loss"])
    assert lerr < 1e-10, (case["name"], "loss", lerr)

    # Central finite differences on a few entries of every gradient.
    rng = np.random.default_rng(0)
    inputs = dict(params)
    inputs["x"] = x
    inputs["h0"] = h0
    if is_lstm:
        inputs["c0"] = c0
    eps = 1e-6
    worst = 0.0
    for gname, gobj in case["grads"].items():
        g = from_json(gobj)
        assert g.shape == inputs[gname].shape, (case["name"], gname)
        flat_idx = rng.choice(g.size, size=min(3, g.size), replace=False)
        for fi in flat_idx:
            vals = {}
            for sign in (+1, -1):
                mod = {k: v.copy() for k, v in inputs.items()}
                mod[gname].reshape(-1)[fi] += sign * eps
                p = {k: v for k, v in mod.items() if k not in ("x", "h0", "c0")}
                vals[sign] = np_loss(case, p, mod["x"], mod["h0"], mod.get("c0"))
            fd = (vals[1] - vals[-1]) / (2 * eps)
            an = g.reshape(-1)[fi]
            worst = max(worst, abs(fd - an) / max(1.0, abs(an)))
    assert worst < 1e-6, (case["name"], "grad fd", worst)
    return err, worst


# ---------------------------------------------------------------------------
# LSTM variants (issue 13): projections, layer normalisation, peepholes.
# ---------------------------------------------------------------------------
#
# Same file format as above, plus "proj_size" (P, or null). Every case has
# c0 / c_n, and h0 / h_n / output have the width of h: P for the projected
# LSTM, H otherwise. Parameters per layer l and direction suffix s, in
# state_dict order: weight_ih, weight_hh, bias_ih, bias_hh, then the
# variant's own (names below, all "{name}_l{l}{s}").
#
# LSTM_PROJ (torch.nn.LSTM(proj_size=P), run by PyTorch itself; the loop
# implementation `variant_cell` below re-derives its outputs to 1e-12):
#     [i f g o] = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh          W_hh: [4H, P]
#     c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g)
#     h' = (σ(o) ⊙ tanh(c')) W_hrᵀ                           weight_hr: [P, H]
#   A stacked layer reads D*P features.
#
# LN_LSTM (layer-normalised LSTM, Ba, Kiros & Hinton 2016, eqs. 20-22, in
# PyTorch's gate order i, f, g, o; an independent torch implementation
# driven by autograd). LN(v; γ, β) normalises each row of v over its last
# axis, (v − mean) / sqrt(var + eps) ⊙ γ + β, biased variance, eps = 1e-5
# (torch.nn.functional.layer_norm):
#     a = x W_ihᵀ + b_ih + b_hh,   r = h W_hhᵀ
#     [i f g o] = LN(a; ln_gain_ih, ln_bias_ih) + LN(r; ln_gain_hh, ln_bias_hh)   (each over 4H)
#     c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g)
#     h' = σ(o) ⊙ tanh(LN(c'; ln_gain_c, ln_bias_c))                              (over H)
#   Gains [4H], [4H], [H] start at 1 + 0.15·N(0,1), LN biases at 0.15·N(0,1).
#
# PEEPHOLE_LSTM (Gers & Schmidhuber 2000, diagonal peepholes; independent
# torch implementation):
#     [z_i z_f z_g z_o] = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh
#     i = σ(z_i + weight_ci ⊙ c),  f = σ(z_f + weight_cf ⊙ c),  g = tanh(z_g)
#     c' = f ⊙ c + i ⊙ g
#     o = σ(z_o + weight_co ⊙ c')                 (the new cell state)
#     h' = o ⊙ tanh(c')
#   weight_ci, weight_cf, weight_co: [H].

LN_EPS = 1e-5

# (name, mode, input_size, hidden_size, proj_size, num_layers, bidirectional, batch, seq_len, seed)
PROJ_CASES = [
    ("proj_1layer", "LSTM_PROJ", 3, 5, 2, 1, False, 2, 4, 401),
    ("proj_2layer", "LSTM_PROJ", 3, 5, 3, 2, False, 2, 4, 402),
    ("proj_bidir_1layer", "LSTM_PROJ", 3, 5, 2, 1, True, 2, 4, 403),
    ("proj_bidir_2layer", "LSTM_PROJ", 3, 5, 2, 2, True, 2, 3, 404),
]
LN_CASES = [
    ("ln_lstm_1layer", "LN_LSTM", 3, 4, None, 1, False, 2, 4, 501),
    ("ln_lstm_2layer", "LN_LSTM", 3, 4, None, 2, False, 2, 4, 502),
    ("ln_lstm_bidir_2layer", "LN_LSTM", 3, 4, None, 2, True, 2, 3, 503),
]
PEEPHOLE_CASES = [
    ("peephole_1layer", "PEEPHOLE_LSTM", 3, 4, None, 1, False, 2, 4, 601),
    ("peephole_2layer", "PEEPHOLE_LSTM", 3, 4, None, 2, False, 2, 4, 602),
    ("peephole_bidir_2layer", "PEEPHOLE_LSTM", 3, 4, None, 2, True, 2, 3, 603),
]

# The variant's own parameters after the standard four: (name, shape as a
# function of H and P, initial value from a tensor of that shape).
VARIANT_EXTRA = {
    "LSTM_PROJ": [("weight_hr", lambda H, P: (P, H))],
    "LN_LSTM": [
        ("ln_gain_ih", lambda H, P: (4 * H,)),
        ("ln_bias_ih", lambda H, P: (4 * H,)),
        ("ln_gain_hh", lambda H, P: (4 * H,)),
        ("ln_bias_hh", lambda H, P: (4 * H,)),
        ("ln_gain_c", lambda H, P: (H,)),
        ("ln_bias_c", lambda H, P: (H,)),
    ],
    "PEEPHOLE_LSTM": [
        ("weight_ci", lambda H, P: (H,)),
        ("weight_cf", lambda H, P: (H,)),
        ("weight_co", lambda H, P: (H,)),
    ],
}


def variant_cell(mode, p, x, h, c):
    """One step of a variant from the dict p of one layer-direction's
    parameters (base names), written from the equations above."""
    sig = torch.sigmoid
    H = c.shape[-1]
    if mode == "LN_LSTM":
        ln = torch.nn.functional.layer_norm
        a = x @ p["weight_ih"].T + p["bias_ih"] + p["bias_hh"]
        r = h @ p["weight_hh"].T
        z = (ln(a, (4 * H,), p["ln_gain_ih"], p["ln_bias_ih"], LN_EPS)
             + ln(r, (4 * H,), p["ln_gain_hh"], p["ln_bias_hh"], LN_EPS))
        i, f, g, o = z.split(H, dim=-1)
        c2 = sig(f) * c + sig(i) * torch.tanh(g)
        h2 = sig(o) * torch.tanh(ln(c2, (H,), p["ln_gain_c"], p["ln_bias_c"], LN_EPS))
        return h2, c2
    z = x @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"]
    zi, zf, zg, zo = z.split(H, dim=-1)
    if mode == "LSTM_PROJ":
        c2 = sig(zf) * c + sig(zi) * torch.tanh(zg)
        return (sig(zo) * torch.tanh(c2)) @ p["weight_hr"].T, c2
    if mode == "PEEPHOLE_LSTM":
        i = sig(zi + p["weight_ci"] * c)
        f = sig(zf + p["weight_cf"] * c)
        c2 = f * c + i * torch.tanh(zg)
        o = sig(zo + p["weight_co"] * c2)
        return o * torch.tanh(c2), c2
    raise ValueError(mode)


def variant_forward(mode, L, bidir, params, x, h0, c0):
    """Stacked / bidirectional run with the layout documented at the top."""
    T = x.shape[0]
    D = 2 if bidir else 1
    layer_in = x
    h_n, c_n = [], []
    for l in range(L):
        outs = []
        for d in range(D):
            s = "_reverse" if d == 1 else ""
            suffix = f"_l{l}{s}"
            p = {k[: -len(suffix)]: v for k, v in params.items() if k.endswith(suffix)}
            h, c = h0[l * D + d], c0[l * D + d]
            out = [None] * T
            order = range(T - 1, -1, -1) if d == 1 else range(T)
            for t in order:
                h, c = variant_cell(mode, p, layer_in[t], h, c)
                out[t] = h
            outs.append(torch.stack(out))
            h_n.append(h)
            c_n.append(c)
        layer_in = torch.cat(outs, dim=-1)
    return layer_in, torch.stack(h_n), torch.stack(c_n)


def make_variant_case(name, mode, I, H, P, L, bidir, B, T, seed):
    torch.manual_seed(seed)
    D = 2 if bidir else 1
    W = P if mode == "LSTM_PROJ" else H  # width of h
    if mode == "LSTM_PROJ":
        m = torch.nn.LSTM(I, H, num_layers=L, bidirectional=bidir, proj_size=P).to(torch.float64)
        with torch.no_grad():
            for q in m.parameters():
                q.add_(0.15 * torch.randn_like(q))
        names = [n for n, _ in m.named_parameters()]
        assert list(m.state_dict().keys()) == names
        params = dict(m.named_parameters())
    else:
        # The same layout and initialisation as nn.LSTM's, then the extras.
        k = 1.0 / H ** 0.5
        params = {}
        for l in range(L):
            for d in range(D):
                s = f"_l{l}" + ("_reverse" if d == 1 else "")
                in_l = I if l == 0 else D * W
                shapes = [("weight_ih", (4 * H, in_l)), ("weight_hh", (4 * H, W)),
                          ("bias_ih", (4 * H,)), ("bias_hh", (4 * H,))]
                shapes += [(n, f(H, P)) for n, f in VARIANT_EXTRA[mode]]
                for n, shape in shapes:
                    if n.startswith("ln_gain"):
                        v = 1.0 + 0.15 * torch.randn(shape)
                    elif n.startswith("ln_bias"):
                        v = 0.15 * torch.randn(shape)
                    else:
                        v = torch.empty(shape).uniform_(-k, k) + 0.15 * torch.randn(shape)
                    params[n + s] = v.requires_grad_(True)
        names = list(params)

    x = torch.randn(T, B, I, requires_grad=True)
    h0 = torch.randn(L * D, B, W, requires_grad=True)
    c0 = torch.randn(L * D, B, H, requires_grad=True)
    if mode == "LSTM_PROJ":
        output, (h_n, c_n) = m(x, (h0, c0))
        # The loop implementation reproduces PyTorch's own LSTM.
        o2, hn2, cn2 = variant_forward(mode, L, bidir, params, x, h0, c0)
        err = max((o2 - output).abs().max(), (hn2 - h_n).abs().max(), (cn2 - c_n).abs().max())
        assert err < 1e-12, (name, "proj loop vs nn.LSTM", float(err))
    else:
        output, h_n, c_n = variant_forward(mode, L, bidir, params, x, h0, c0)

    R = torch.randn(output.shape)
    S = torch.randn(h_n.shape)
    Sc = torch.randn(c_n.shape)
    loss = (output * R).sum() + (h_n * S).sum() + (c_n * Sc).sum()
    wrt = [params[n] for n in names] + [x, h0, c0]
    grads = torch.autograd.grad(loss, wrt)
    grad_names = names + ["x", "h0", "c0"]
    return {
        "name": name,
        "mode": mode,
        "input_size": I,
        "hidden_size": H,
        "proj_size": P,
        "num_layers": L,
        "bidirectional": bidir,
        "batch": B,
        "seq_len": T,
        "params": {n: tensor_json(params[n]) for n in names},
        "x": tensor_json(x),
        "h0": tensor_json(h0),
        "c0": tensor_json(c0),
        "output": tensor_json(output),
        "h_n": tensor_json(h_n),
        "c_n": tensor_json(c_n),
        "loss_weights": {"output": tensor_json(R), "h_n": tensor_json(S), "c_n": tensor_json(Sc)},
        "loss": float(loss.item()),
        "grads": {n: tensor_json(g) for n, g in zip(grad_names, grads)},
    }


def verify_variant_case(case):
    """Recomputes the loss from the file with the loop implementation and
    checks a few entries of every gradient by central differences."""
    t = lambda obj: torch.tensor(from_json(obj))
    params = {k: t(v) for k, v in case["params"].items()}
    inputs = dict(params, x=t(case["x"]), h0=t(case["h0"]), c0=t(case["c0"]))
    lw = {k: t(v) for k, v in case["loss_weights"].items()}

    def loss_of(inp):
        p = {k: v for k, v in inp.items() if k not in ("x", "h0", "c0")}
        out, hn, cn = variant_forward(case["mode"], case["num_layers"], case["bidirectional"],
                                      p, inp["x"], inp["h0"], inp["c0"])
        return float((out * lw["output"]).sum() + (hn * lw["h_n"]).sum() + (cn * lw["c_n"]).sum())

    lerr = abs(loss_of(inputs) - case["loss"])
    assert lerr < 1e-10, (case["name"], "loss", lerr)
    rng = np.random.default_rng(0)
    eps, worst = 1e-6, 0.0
    for gname, gobj in case["grads"].items():
        g = from_json(gobj).reshape(-1)
        for fi in rng.choice(g.size, size=min(3, g.size), replace=False):
            vals = []
            for sign in (1, -1):
                mod = {k: v.clone() for k, v in inputs.items()}
                mod[gname].view(-1)[fi] += sign * eps
                vals.append(loss_of(mod))
            fd = (vals[0] - vals[1]) / (2 * eps)
            worst = max(worst, abs(fd - g[fi]) / max(1.0, abs(g[fi])))
    assert worst < 1e-6, (case["name"], "grad fd", worst)
    return lerr, worst


def write(fname, cases):
    doc = {"generator": GENERATOR, "torch_version": torch.__version__, "cases": cases}
    path = os.path.join(OUT_DIR, fname)
    with open(path, "w") as f:
        json.dump(doc, f, indent=None, separators=(",", ":"))
        f.write("\n")


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    files = {
        "torch_rnn.json": RNN_CASES,
        "torch_lstm.json": LSTM_CASES,
        "torch_gru.json": GRU_CASES,
    }
    for fname, specs in files.items():
        write(fname, [make_case(*spec) for spec in specs])
    variants = {
        "torch_proj_lstm.json": PROJ_CASES,
        "torch_ln_lstm.json": LN_CASES,
        "torch_peephole_lstm.json": PEEPHOLE_CASES,
    }
    for fname, specs in variants.items():
        write(fname, [make_variant_case(*spec) for spec in specs])

    # Reload and verify everything against the numpy reference.
    for fname in files:
        path = os.path.join(OUT_DIR, fname)
        with open(path) as f:
            doc = json.load(f)
        print(f"{fname}: {os.path.getsize(path)} bytes, torch {doc['torch_version']}")
        for case in doc["cases"]:
            err, fd = verify_case(case)
            print(f"  {case['name']:<28} fwd_err={err:.1e} grad_fd_rel={fd:.1e}")
    for fname in variants:
        path = os.path.join(OUT_DIR, fname)
        with open(path) as f:
            doc = json.load(f)
        print(f"{fname}: {os.path.getsize(path)} bytes, torch {doc['torch_version']}")
        for case in doc["cases"]:
            err, fd = verify_variant_case(case)
            print(f"  {case['name']:<28} loss_err={err:.1e} grad_fd_rel={fd:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
