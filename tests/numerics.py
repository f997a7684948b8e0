"""A fingerprint of how this CPU computes floats, independent of the library's code.

The same seeded run gives different floats on CPUs with different vector instruction sets
(torch picks its kernels by CPU: matmul blocking, vectorised exp/log/tanh), and a long training
run amplifies the difference. Bit-exact comparisons with numbers recorded on one machine are
only meaningful on a machine whose fingerprint matches; elsewhere they are skipped with that
reason (the library's code cannot change this fingerprint, so a code change never hides here).
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F


def numerics_fingerprint() -> str:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(257, 193, generator=g)
        w = torch.randn(193, 131, generator=g)
        parts = [x @ w, torch.tanh(x), torch.exp(x.clamp(max=5.0)), torch.log1p(x.abs()), F.logsigmoid(x),
                 F.softplus(x), F.gelu(x), torch.softmax(x, dim=-1), F.layer_norm(x, (193,)),
                 torch.sigmoid(x) * torch.rsqrt(x.abs() + 1.0)]
        h = hashlib.sha256()
        for p in parts:
            h.update(p.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]
    finally:
        torch.set_num_threads(threads)
