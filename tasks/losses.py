"""The training losses of the classification tasks, each written as its paper's equation.

Restricted cross-entropy (the cloze paraphrase task). The model's next-token distribution is softmax over the
whole vocabulary; we only ask it to choose between a few answer tokens C (here "no", "yes"), so the loss is the
cross-entropy of the distribution renormalised over C:

    p(c | x) = exp(z_c) / sum_{c' in C} exp(z_{c'}),      L = -log p(c_y | x)

which equals taking the full softmax and dividing by the mass of C (the other tokens' share cancels).

R-Drop (Liang et al. 2021, "R-Drop: Regularized Dropout for Neural Networks", eq. 3). Two forward passes of the
same batch see two dropout masks, giving distributions P1, P2; the loss is

    L = CE(P1, y) + CE(P2, y) + alpha * 1/2 [KL(P1 || P2) + KL(P2 || P1)],    KL(P || Q) = sum_k P_k log(P_k / Q_k)

SimCSE, unsupervised (Gao et al. 2021, "SimCSE: Simple Contrastive Learning of Sentence Embeddings", eq. 1). Two
dropout views h_i, h_i^+ of the same N inputs; each view's positive is its twin, the other N-1 twins are the
in-batch negatives:

    l_i = -log exp(sim(h_i, h_i^+) / tau) / sum_{j=1}^{N} exp(sim(h_i, h_j^+) / tau),   sim = cosine similarity

and the loss is the mean of l_i over the batch (tau = 0.05 in the paper).
Every function returns the mean over the batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def restricted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                             candidate_ids: list[int] | torch.Tensor | None = None) -> torch.Tensor:
    """-log p(c_y) with p renormalised over the candidates.

    logits: (B, V) full-vocabulary logits and candidate_ids the K answer token ids, or (B, K) logits of the
    candidates already (candidate_ids None). labels: (B,) in 0..K-1, the index into the candidates.
    """
    if candidate_ids is not None:
        logits = logits[:, torch.as_tensor(candidate_ids, device=logits.device)]  # (B, K)
    return F.cross_entropy(logits.float(), labels)


def symmetric_kl(logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
    """1/2 [KL(P1 || P2) + KL(P2 || P1)] with P = softmax(logits), (B, K) each; the mean over the batch."""
    logp1, logp2 = F.log_softmax(logits1.float(), dim=-1), F.log_softmax(logits2.float(), dim=-1)  # (B, K)
    kl_12 = (logp1.exp() * (logp1 - logp2)).sum(dim=-1)  # (B,)  KL(P1 || P2)
    kl_21 = (logp2.exp() * (logp2 - logp1)).sum(dim=-1)  # (B,)  KL(P2 || P1)
    return 0.5 * (kl_12 + kl_21).mean()


def rdrop_loss(logits1: torch.Tensor, logits2: torch.Tensor, labels: torch.Tensor, alpha: float) -> torch.Tensor:
    """R-Drop: CE(P1, y) + CE(P2, y) + alpha * symmetric KL(P1, P2); logits (B, K) of two dropout passes."""
    ce = F.cross_entropy(logits1.float(), labels) + F.cross_entropy(logits2.float(), labels)
    return ce + alpha * symmetric_kl(logits1, logits2)


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """SimCSE's InfoNCE: z1[i] and z2[i] (B, C) are two views of input i; every z2[j], j != i, is a negative."""
    if temperature <= 0:
        raise ValueError(f"the SimCSE temperature must be > 0, got {temperature}")
    z1, z2 = F.normalize(z1.float(), dim=-1), F.normalize(z2.float(), dim=-1)  # unit vectors: dot = cosine
    sim = z1 @ z2.T / temperature  # (B, B): sim[i, j] = cos(h_i, h_j^+) / tau
    targets = torch.arange(sim.size(0), device=sim.device)  # the positive of row i is column i
    return F.cross_entropy(sim, targets)
