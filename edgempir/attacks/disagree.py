"""The early-exit vote's attack surface: how often can an attacker force its slow path?

The deployed early-exit graph (targets/host/graph.py, edgempir.vote.cascade) runs the
reference (fp32) member only where the cheaper members leave the vote open; for the paper's
three members, where the two low-bit members disagree. Its latency therefore depends on
the input, and an attacker who wants to slow the device down aims at disagreement, not
at a wrong decision. :func:`slow_path_attack` measures the share of test images that an
adaptive attacker can drive onto the slow path inside the L-inf eps ball:

- loss (maximised by L-inf PGD with a random start, sign steps, projection): minus the
  largest total probability any class gets from the non-reference members,
  ``-max_c sum_i softmax_i(x)[c]``. It falls when their votes split, which is exactly what
  leaves the vote open; gradients flow through Brevitas' straight-through quantizers, as in
  the adaptive protocol's attacks;
- success is judged with the real rule: the image is on the slow path when
  ``Ensemble.predict_early_exit`` runs the reference member on it (checked after every
  step; an image counts once it was pushed there by any iterate).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from edgempir.attacks.base import AttackError, check_eps, frozen, per_image_uniform
from edgempir.contract import cascade_order

LOSS = "minus the largest summed softmax probability of any class over the non-reference members"


@dataclass(frozen=True)
class SlowPathAttack:
    steps: int = 20
    restarts: int = 1
    rel_step: float = 0.1   # step size = rel_step * eps
    seed: int = 0

    def to_json(self) -> dict:
        return asdict(self)


# eval's configurations (edgempir/eval/config.py): standard attacks harder, quick is labelled lighter
CONFIGS = {"standard": SlowPathAttack(steps=100, restarts=2), "quick": SlowPathAttack()}


def _cheap_members(ens) -> list[int]:
    return [i for i in cascade_order(ens.specs) if i != ens.reference]


def _split_loss(ens, members: list[int], x: torch.Tensor) -> torch.Tensor:
    probs = torch.stack([ens.members[i](x).softmax(dim=1) for i in members]).sum(dim=0)
    return -probs.max(dim=1).values.sum()


def _on_slow_path(ens, x: torch.Tensor) -> torch.Tensor:
    _, ran = ens.predict_early_exit(x)
    return ran[ens.reference]


def slow_path_flags(ens, x: torch.Tensor, eps: float, cfg: SlowPathAttack,
                    batch_size: int = 250, ids: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image of ``x``: on the slow path clean, and after the attack (bool [B] each).
    With ``ids`` (the images' ids) every random start is drawn per image (seed, eps,
    restart, id), so an image's flags do not depend on the other images of its batch."""
    eps = check_eps(eps)
    members = _cheap_members(ens)
    gen = torch.Generator().manual_seed(cfg.seed)
    clean, attacked = [], []
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size]
        hit = _on_slow_path(ens, xb)
        clean.append(hit.clone())
        lo, hi = (xb - eps).clamp(min=0.0), (xb + eps).clamp(max=1.0)
        for r in range(cfg.restarts):
            open_rows = ~hit
            if not open_rows.any() or not members:
                break
            x0, l0, h0 = xb[open_rows], lo[open_rows], hi[open_rows]
            if ids is None:
                noise = torch.rand(x0.shape, generator=gen)
            else:
                noise = per_image_uniform(x0.shape, ids[s:s + batch_size][open_rows],
                                          cfg.seed, "pgd-disagreement", eps, r)
            adv = (x0 + (noise * 2 - 1) * eps).clamp(l0, h0)
            found = _on_slow_path(ens, adv)
            for _ in range(cfg.steps):
                adv = adv.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(_split_loss(ens, members, adv), adv)
                adv = (adv.detach() + cfg.rel_step * eps * grad.sign()).clamp(l0, h0)
                found |= _on_slow_path(ens, adv)
            idx = open_rows.nonzero().squeeze(1)
            hit[idx[found]] = True
        attacked.append(hit)
    empty = torch.zeros(0, dtype=torch.bool)
    return (torch.cat(clean) if clean else empty), (torch.cat(attacked) if attacked else empty)


def slow_path_summary(ens, clean: torch.Tensor, attacked: torch.Tensor, eps: float,
                      cfg: SlowPathAttack) -> dict:
    """The measurement's record from the per-image flags of ``slow_path_flags``."""
    n = len(clean)
    return {"eps": float(eps), "norm": "Linf", "n": n,
            "clean_slow_path": float(clean.float().mean()) if n else None,
            "attacked_slow_path": float(attacked.float().mean()) if n else None,
            "attack": {"name": "pgd-disagreement", "loss": LOSS, **cfg.to_json()},
            "members_attacked": _cheap_members(ens), "reference_member": int(ens.reference)}


def slow_path_attack(ens, x: torch.Tensor, eps: float, cfg: SlowPathAttack,
                     batch_size: int = 250, ids: torch.Tensor | None = None) -> dict:
    """Slow-path share of ``x`` clean and under the attack (the ensemble ``ens`` in eval
    mode; ``x`` images in [0, 1])."""
    clean, attacked = slow_path_flags(ens, x, eps, cfg, batch_size, ids)
    return slow_path_summary(ens, clean, attacked, eps, cfg)


def _checked_settings(settings: dict) -> dict:
    """``overrides["disagree"]``: ``steps`` and ``restarts``, whole numbers >= 1."""
    for key, value in settings.items():
        if key not in ("steps", "restarts"):
            raise AttackError(f"overrides['disagree'] has {key!r}; it takes steps and restarts")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise AttackError(f"overrides['disagree'][{key!r}] = {value!r}: must be a whole "
                              "number >= 1")
    return dict(settings)


def disagreement_report(ens, x: torch.Tensor, eps: float, config: str, protocol: str,
                        seed: int, batch_size: int, ids: torch.Tensor | None = None,
                        map_rows=None, settings: dict | None = None) -> dict | None:
    """eval's ``disagreement`` entry (docs/EVAL.md); None when the combiner is not the vote
    (no early exit to attack) or there is no cheaper member. ``map_rows(fn, n)`` (eval's
    shards) runs ``fn(rows)`` on parts of ``range(n)`` and joins the per-image flags.
    ``settings`` (eval's ``overrides["disagree"]``) change the configuration's ``steps``
    and ``restarts``; the description says what ran."""
    if ens.combiner != "vote" or not _cheap_members(ens):
        return None
    cfg = CONFIGS.get(config, CONFIGS["quick"])
    cfg = SlowPathAttack(cfg.steps, cfg.restarts, cfg.rel_step, seed)
    if settings:
        cfg = replace(cfg, **_checked_settings(settings))

    def flags(rows):
        rows = torch.as_tensor(rows, dtype=torch.long)
        return slow_path_flags(ens, x[rows], eps, cfg, batch_size,
                               None if ids is None else ids[rows])

    with frozen(ens):  # eval mode, input gradients only
        clean, attacked = (flags(torch.arange(len(x))) if map_rows is None
                           else map_rows(flags, len(x)))
    out = slow_path_summary(ens, torch.as_tensor(clean), torch.as_tensor(attacked), eps, cfg)
    out["protocol"] = protocol
    out["description"] = (f"slow path of the early-exit vote (reference member run), protocol "
                          f"{protocol} ({config}): {cfg.steps}-step PGD x{cfg.restarts} on "
                          f"the members' disagreement, Linf eps {eps:g}, {len(x)} test images")
    return out
