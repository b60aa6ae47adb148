"""The ensemble module and its combiners.

``Ensemble(members, specs, combiner)`` runs every member on the same input. Its forward
returns one score row per image whose argmax is the ensemble's decision under the chosen
combiner:

- ``vote``: the paper's rule (see ``edgempir.vote``); scores are the one-hot decision, so
  they carry no gradient: attacking the vote needs a surrogate (``surrogate()``).
- ``mean-softmax``: mean of the members' softmax outputs (differentiable).
- ``mean-logits``: mean of the members' logits (differentiable).

``member_logits(x)`` exposes every member's output, ``[members, batch, classes]``.
"""
from __future__ import annotations

import torch
from torch import nn

from edgempir.contract import cascade_order, reference_index
from edgempir.errors import SpecError
from edgempir.members import MemberSpec

COMBINERS = ("vote", "mean-softmax", "mean-logits")


def vote_scores(member_logits: torch.Tensor, reference: int) -> torch.Tensor:
    """One-hot scores [B, C] of the paper's vote: strict majority, else the reference member."""
    m, b, c = member_logits.shape
    preds = member_logits.argmax(dim=2)  # [M, B]
    counts = torch.zeros(b, c, dtype=torch.long, device=member_logits.device)
    counts.scatter_add_(1, preds.t(), torch.ones_like(preds.t()))
    top_count, top = counts.max(dim=1)
    decision = torch.where(top_count * 2 > m, top, preds[reference])
    return nn.functional.one_hot(decision, c).to(member_logits.dtype)


def accepted(member_logits: torch.Tensor, policy: str) -> torch.Tensor:
    """[B] bool: the reject policy's verdict on the vote (``edgempir.vote.accepted``)."""
    from edgempir.vote import REJECT_POLICIES

    preds = member_logits.argmax(dim=2)
    if policy == "majority":
        return torch.ones(preds.shape[1], dtype=torch.bool, device=preds.device)
    if policy == "unanimous":
        return (preds == preds[:1]).all(dim=0)
    raise SpecError(f"unknown reject policy {policy!r}; known: {', '.join(REJECT_POLICIES)}")


def combine(member_logits: torch.Tensor, combiner: str, reference: int) -> torch.Tensor:
    if combiner == "vote":
        return vote_scores(member_logits, reference)
    if combiner == "mean-softmax":
        return member_logits.softmax(dim=2).mean(dim=0)
    if combiner == "mean-logits":
        return member_logits.mean(dim=0)
    raise SpecError(f"unknown combiner {combiner!r}; known: {', '.join(COMBINERS)}")


class Ensemble(nn.Module):
    def __init__(self, members: list[nn.Module], specs: list[MemberSpec], combiner: str = "vote"):
        super().__init__()
        if len(members) != len(specs):
            raise ValueError("one spec per member")
        if combiner not in COMBINERS:
            raise SpecError(f"unknown combiner {combiner!r}; known: {', '.join(COMBINERS)}")
        self.members = nn.ModuleList(members)
        self.specs = list(specs)
        self.combiner = combiner
        self.reference = reference_index(self.specs)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return combine(self.member_logits(x), self.combiner, self.reference)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).argmax(dim=1)

    @torch.no_grad()
    def predict_early_exit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The vote's decisions with each member run only on the rows where it can still
        change them (edgempir.vote.cascade, the deployed early-exit graph's rule): class ids
        [B] equal to ``predict(x)`` under ``vote``, and member_ran [M, B] bool."""
        from edgempir.vote import cascade

        if self.combiner != "vote":
            raise SpecError(f"early exit is a property of the vote, not of {self.combiner!r}")

        def run_member(i: int, rows) -> torch.Tensor:
            return self.members[i](x[torch.from_numpy(rows)]).float().cpu().numpy()

        ids, _, ran = cascade(run_member, len(x), len(self.members),
                              cascade_order(self.specs), self.reference)
        return torch.from_numpy(ids), torch.from_numpy(ran)

    def surrogate(self) -> MeanSoftmaxSurrogate:
        return MeanSoftmaxSurrogate(self)

    def subset(self, indices: list[int], combiner: str | None = None) -> Ensemble:
        return Ensemble([self.members[i] for i in indices], [self.specs[i] for i in indices],
                        combiner or self.combiner)


class MeanSoftmaxSurrogate(nn.Module):
    """Differentiable stand-in for the deployed ensemble (Tramer et al. 2020 on EMPIR).

    Returns log(mean_i softmax(member_i(x))): cross-entropy on these "logits" is the NLL of
    the mean probability, and their argmax is the mean-softmax decision. Gradients flow
    through Brevitas' straight-through quantizers.
    """

    def __init__(self, ensemble: Ensemble):
        super().__init__()
        self.ensemble = ensemble

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.ensemble.member_logits(x)
        log_probs = logits.log_softmax(dim=2)
        return torch.logsumexp(log_probs, dim=0) - torch.log(
            torch.tensor(float(logits.shape[0]), dtype=logits.dtype))


class AgreeingMembersAverage(nn.Module):
    """The EMPIR reference code's attack target for FGSM and PGD on the ensemble
    (``ensembleThreeModel.fprop``, layer ``combinedAvgCorrectProb``, in sancharisen/EMPIR
    ``cleverhans_tutorials/tutorial_models.py``).

    Returns, per image, the mean softmax *probabilities* of the members whose argmax equals
    the vote's decision at this very input (recomputed at every call, i.e. at every attack
    step; with no majority only the reference member agrees). Which members agree is a
    hard choice without gradient; gradients flow through the chosen members' softmax.

    The output is probabilities, not logits, on purpose: CleverHans' ``model_loss`` unwraps
    logits only from a Softmax op, so on this tensor the reference computed
    ``softmax_cross_entropy_with_logits(logits=mean_probs, labels=y)``, i.e. the
    cross-entropy of softmax(mean probabilities). Our attacks' cross-entropy on this output
    is exactly that loss.
    """

    def __init__(self, ensemble: Ensemble):
        super().__init__()
        self.ensemble = ensemble

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.ensemble.member_logits(x)                       # [M, B, C]
        decision = vote_scores(logits.detach(), self.ensemble.reference).argmax(dim=1)
        agree = (logits.detach().argmax(dim=2) == decision[None]).to(logits.dtype)  # [M, B]
        probs = logits.softmax(dim=2)
        return (probs * agree[:, :, None]).sum(dim=0) / agree.sum(dim=0)[:, None]
