"""Each loss of tasks/losses.py against a direct formula on small tensors (float64 loops or torch builtins)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tasks.losses import info_nce, rdrop_loss, restricted_cross_entropy, symmetric_kl


def logits_pair(B=4, K=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, K, generator=g) * 2, torch.randn(B, K, generator=g) * 2


def test_symmetric_kl_equals_kl_written_out():
    a, b = logits_pair()
    p, q = a.double().softmax(-1), b.double().softmax(-1)
    expected = 0.0
    for i in range(a.size(0)):  # KL(P||Q) = sum_k p_k log(p_k / q_k), both directions, mean over rows
        kl_pq = sum(p[i, k] * math.log(p[i, k] / q[i, k]) for k in range(a.size(1)))
        kl_qp = sum(q[i, k] * math.log(q[i, k] / p[i, k]) for k in range(a.size(1)))
        expected += 0.5 * (kl_pq + kl_qp) / a.size(0)
    torch.testing.assert_close(symmetric_kl(a, b).double(), torch.tensor(float(expected), dtype=torch.double),
                               rtol=1e-5, atol=1e-6)


def test_symmetric_kl_equals_torch_kl_div():
    a, b = logits_pair(seed=1)
    logp, logq = a.log_softmax(-1), b.log_softmax(-1)
    # F.kl_div(input=log Q, target=log P, log_target=True) = KL(P || Q); batchmean divides by the batch size
    expected = 0.5 * (F.kl_div(logq, logp, reduction="batchmean", log_target=True)
                      + F.kl_div(logp, logq, reduction="batchmean", log_target=True))
    torch.testing.assert_close(symmetric_kl(a, b), expected)
    assert symmetric_kl(a, a).item() == pytest.approx(0.0, abs=1e-7)


def test_rdrop_loss_is_both_cross_entropies_plus_alpha_kl():
    a, b = logits_pair(seed=2)
    y = torch.tensor([0, 4, 2, 1])
    alpha = 0.7
    expected = F.cross_entropy(a, y) + F.cross_entropy(b, y) + alpha * symmetric_kl(a, b)
    torch.testing.assert_close(rdrop_loss(a, b, y, alpha), expected)
    nll = -sum(a[i].log_softmax(-1)[y[i]] + b[i].log_softmax(-1)[y[i]] for i in range(4)) / 4
    torch.testing.assert_close(rdrop_loss(a, b, y, 0.0), nll)


@pytest.mark.parametrize("tau", [0.05, 1.0])
def test_info_nce_equals_an_explicit_loop(tau):
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    total = 0.0
    for i in range(5):  # l_i = -log exp(cos(h_i, h_i+)/tau) / sum_j exp(cos(h_i, h_j+)/tau)
        sims = [F.cosine_similarity(z1[i].double(), z2[j].double(), dim=0).item() / tau for j in range(5)]
        total += -(sims[i] - math.log(sum(math.exp(s) for s in sims)))
    assert info_nce(z1, z2, tau).item() == pytest.approx(total / 5, rel=1e-5)


def test_info_nce_prefers_matching_views():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(6, 8, generator=g)
    assert info_nce(z, z + 0.01 * torch.randn(6, 8, generator=g)) < info_nce(z, z.roll(1, dims=0))
    with pytest.raises(ValueError, match="temperature"):
        info_nce(z, z, 0.0)


def test_restricted_cross_entropy_equals_full_softmax_renormalised():
    g = torch.Generator().manual_seed(5)
    V, ids = 50, [7, 31]  # e.g. "no", "yes"
    logits = torch.randn(4, V, generator=g) * 3
    labels = torch.tensor([0, 1, 1, 0])
    p = logits.double().softmax(-1)  # over the whole vocabulary
    expected = -sum(math.log(p[i, ids[labels[i]]] / (p[i, ids[0]] + p[i, ids[1]])) for i in range(4)) / 4
    assert restricted_cross_entropy(logits, labels, ids).item() == pytest.approx(expected, rel=1e-5)
    # the same numbers from the (B, 2) logits of the answers alone
    assert restricted_cross_entropy(logits[:, ids], labels).item() == pytest.approx(expected, rel=1e-5)
