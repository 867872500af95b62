"""Mamba-1 in PyTorch for training on the CPU, with Hugging Face `MambaForCausalLM` tensor names.

Written from the same semantics the engine serves (see tests/reference/README.md): pre-norm
residual blocks, in_proj -> causal depthwise conv + SiLU -> x_proj (dt_low, B, C) ->
softplus(dt_proj) -> selective scan -> gate with SiLU(z) -> out_proj; final RMSNorm and a tied
lm_head. The scan runs step by step over time (SelectiveScan): exactly the recurrence the engine
computes, with no chunked reformulation whose exponentials could overflow.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class SelectiveScan(torch.autograd.Function):
    """The selective scan of one layer, with its gradient written out by hand.

    For each time step t: h = exp(dt[t] A) * h + (dt[t] x[t]) B[t],  y[t] = h C[t]  (h[-1] = 0).
    x, dt: [batch, L, E]; A: [E, N]; B, C: [batch, L, N]; returns y: [batch, L, E].

    Both directions loop over time on [batch, E, N] tiles that stay in cache, building each step's
    decay and input from dt, x and B on the fly. Autograd over whole [batch, L, E, N] tensors
    streams several of them through memory per operation and was ~5x slower on 2 cores.
    """

    @staticmethod
    def forward(ctx, x, dt, a, b, c):
        batch, length, inner = x.shape
        states = x.new_empty(batch, length, inner, a.shape[1])
        y = x.new_empty(batch, length, inner)
        u = dt * x
        h = x.new_zeros(batch, inner, a.shape[1])
        for t in range(length):
            decay = torch.exp(dt[:, t, :, None] * a)
            h = torch.addcmul(u[:, t, :, None] * b[:, t, None, :], decay, h, out=states[:, t])
            y[:, t] = torch.bmm(h, c[:, t, :, None]).squeeze(-1)
        ctx.save_for_backward(x, dt, a, b, c, states)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, dt, a, b, c, states = ctx.saved_tensors
        length = x.shape[1]
        u = dt * x
        grad_x, grad_dt = torch.empty_like(x), torch.empty_like(dt)
        grad_b, grad_c = torch.empty_like(b), torch.empty_like(c)
        grad_a = torch.zeros_like(a)
        g = torch.zeros_like(states[:, 0])  # dLoss/dh[t]: flows back through the decays
        for t in range(length - 1, -1, -1):
            h = states[:, t]
            g.addcmul_(grad_y[:, t, :, None], c[:, t, None, :])
            grad_c[:, t] = torch.bmm(grad_y[:, t, None, :], h).squeeze(1)
            grad_u = torch.bmm(g, b[:, t, :, None]).squeeze(-1)
            grad_b[:, t] = torch.bmm(u[:, t, None, :], g).squeeze(1)
            decay = torch.exp(dt[:, t, :, None] * a)
            grad_dt[:, t] = grad_u * x[:, t]
            grad_x[:, t] = grad_u * dt[:, t]
            if t > 0:
                # d(decay)/d(dt A) = decay: the gradient of the exponent, then through dt and A.
                grad_exponent = g * states[:, t - 1] * decay
                grad_dt[:, t] += (grad_exponent * a).sum(-1)
                grad_a += (grad_exponent * dt[:, t, :, None]).sum(0)
            g.mul_(decay)
        return grad_x, grad_dt, grad_a, grad_b, grad_c


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Mixer(nn.Module):
    def __init__(self, d_model, d_inner, d_state, d_conv, dt_rank):
        super().__init__()
        self.d_inner, self.d_state, self.dt_rank = d_inner, d_state, dt_rank
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        # The initialisation of the Mamba paper: A = -(1..N) per channel, D = 1, dt in
        # [1e-3, 1e-1] log-uniformly through the inverse softplus of dt_proj's bias.
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a))
        self.D = nn.Parameter(torch.ones(d_inner))
        dt = torch.exp(torch.rand(d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            nn.init.uniform_(self.dt_proj.weight, -dt_rank**-0.5, dt_rank**-0.5)

    def forward(self, u):
        batch, length, _ = u.shape
        x, z = self.in_proj(u).chunk(2, dim=-1)
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :length]).transpose(1, 2)
        dt_low, b, c = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt_low))  # [batch, length, E]
        y = SelectiveScan.apply(x, dt, -torch.exp(self.A_log), b, c) + x * self.D
        return self.out_proj(y * F.silu(z))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm = RMSNorm(cfg["hidden_size"], cfg["layer_norm_epsilon"])
        self.mixer = Mixer(cfg["hidden_size"], cfg["intermediate_size"], cfg["state_size"],
                           cfg["conv_kernel"], cfg["time_step_rank"])

    def forward(self, h):
        return h + self.mixer(self.norm(h))


class MambaLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embeddings = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        nn.init.normal_(self.embeddings.weight, std=0.02)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg["num_hidden_layers"]))
        self.norm_f = RMSNorm(cfg["hidden_size"], cfg["layer_norm_epsilon"])
        # GPT-2 style: shrink the residual branches' output projections with depth.
        for layer in self.layers:
            nn.init.normal_(layer.mixer.out_proj.weight,
                            std=0.02 / math.sqrt(2 * cfg["num_hidden_layers"]))

    def forward(self, tokens):
        h = self.embeddings(tokens)
        for layer in self.layers:
            h = layer(h)
        return F.linear(self.norm_f(h), self.embeddings.weight)  # tied lm_head

    def hf_state_dict(self):
        """Tensors under the names MambaForCausalLM uses (lm_head tied: not stored)."""
        out = {"backbone.embeddings.weight": self.embeddings.weight,
               "backbone.norm_f.weight": self.norm_f.weight}
        for i, layer in enumerate(self.layers):
            p = "backbone.layers.%d." % i
            m = layer.mixer
            out[p + "norm.weight"] = layer.norm.weight
            out[p + "mixer.in_proj.weight"] = m.in_proj.weight
            out[p + "mixer.conv1d.weight"] = m.conv1d.weight
            out[p + "mixer.conv1d.bias"] = m.conv1d.bias
            out[p + "mixer.x_proj.weight"] = m.x_proj.weight
            out[p + "mixer.dt_proj.weight"] = m.dt_proj.weight
            out[p + "mixer.dt_proj.bias"] = m.dt_proj.bias
            out[p + "mixer.A_log"] = m.A_log
            out[p + "mixer.D"] = m.D
            out[p + "mixer.out_proj.weight"] = m.out_proj.weight
        return {k: v.detach().contiguous().clone() for k, v in out.items()}
