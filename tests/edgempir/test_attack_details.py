"""Details of the attacks that the strength and threat-model tests leave open (found by
mutation testing, docs/TESTING.md "Mutation testing"): step sizes, random starts, restarts."""
from __future__ import annotations

import pytest
import torch

from edgempir.attacks import REGISTRY, make_attack


def _decisions(answer):
    """A ``decide`` that records the batch sizes it was asked about and answers ``answer``."""
    calls = []

    def decide(xb):
        calls.append(len(xb))
        return answer(xb)
    return decide, calls


def test_pgd_step_is_the_given_size_else_rel_step_times_eps():
    assert make_attack("pgd", eps=0.2).step() == pytest.approx(0.05)   # rel_step 0.25
    assert make_attack("pgd", eps=0.2, rel_step=0.5).step() == pytest.approx(0.1)
    assert make_attack("pgd", eps=0.2, step_size=0.03).step() == 0.03


def test_pgd_random_start_is_uniform_in_the_ball_and_seeded(tiny_model, tiny_batch):
    """Zero steps leave the random start: x + U(-eps, eps) from the seed's generator."""
    x, y = tiny_batch
    eps = 0.1
    out = make_attack("pgd", eps=eps, steps=0, seed=5)(tiny_model, x, y)
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(5))
    expected = (x + (2 * noise - 1) * eps).clamp(x - eps, x + eps).clamp(0, 1)
    assert torch.allclose(out, expected, atol=1e-7)
    no_start = make_attack("pgd", eps=eps, steps=0, random_start=False)(tiny_model, x, y)
    assert torch.equal(no_start, x)


def test_pgd_without_random_start_is_bim(tiny_model, tiny_batch):
    x, y = tiny_batch
    pgd = make_attack("pgd", eps=0.1, steps=3, step_size=0.02, random_start=False)
    bim = make_attack("bim", eps=0.1, steps=3, step_size=0.02)
    out = pgd(tiny_model, x, y)
    assert torch.equal(out, bim(tiny_model, x, y))
    # three steps of 0.02 move every pixel with a non-zero gradient by 0.06 at most, and some
    # pixel by exactly that (not clipped at eps 0.1)
    assert (out - x).abs().max() == pytest.approx(0.06, abs=1e-6)


def test_pgd_restarts_stop_once_every_sample_is_fooled(tiny_model, tiny_batch):
    x, y = tiny_batch
    decide, calls = _decisions(lambda xb: torch.full((len(xb),), -1))
    make_attack("pgd", eps=0.05, steps=1, restarts=3)(tiny_model, x, y, decide=decide)
    assert calls == [len(x)]          # everything fooled after the first: no second restart


def test_pgd_restarts_rerun_only_the_unbroken_samples(tiny_model, tiny_batch):
    """A restart re-runs (and may replace) only what the decision still gets right; the
    others keep the first restart's example."""
    x, y = tiny_batch
    half = len(x) // 2

    def first_half_right(xb):     # the first restart breaks the second half only (a class
        # above every label: "fooled" is any other answer, not a lower one)
        return torch.cat([y[:half], torch.full((len(xb) - half,), 99)])[: len(xb)]
    decide, calls = _decisions(first_half_right)
    attack = make_attack("pgd", eps=0.05, steps=2, restarts=2, seed=1)
    out = attack(tiny_model, x, y, decide=decide)
    assert calls == [len(x)]
    single = make_attack("pgd", eps=0.05, steps=2, restarts=1, seed=1)(tiny_model, x, y)
    assert torch.equal(out[half:], single[half:])
    assert not torch.equal(out[:half], single[:half])   # a new random start for the rest


def test_pgd_every_restart_but_the_last_narrows_to_the_unbroken_samples(tiny_model,
                                                                        tiny_batch):
    """Protocol adaptive standard's PGD x5: after each restart but the last, the samples the
    decision calls broken keep their example, and the next restart runs on the rest only
    (a later restart must never replace an adversarial example with a failed one)."""
    x, y = tiny_batch
    half = len(x) // 2
    broken_late = torch.cat([y[:half], torch.full((len(x) - half,), 99)])
    answers = iter([y, y, y, broken_late])       # the fourth restart breaks the second half
    decide, calls = _decisions(lambda xb: next(answers)[: len(xb)])
    sizes = []

    class Recording(torch.nn.Module):
        def forward(self, xb):
            sizes.append(len(xb))
            return tiny_model(xb)

    make_attack("pgd", eps=0.05, steps=1, restarts=5)(Recording(), x, y, decide=decide)
    assert calls == [len(x)] * 4                 # no decision after the last restart
    assert sizes[-1] == half, sizes              # the fifth runs on the unbroken half only


def test_sign_steps_are_projected_after_every_step(tiny_model, tiny_batch):
    """An independent loop: each step leaves the ball and is projected back at once (the
    base class's final projection alone would hide a wrong bound inside the loop)."""
    x, y = tiny_batch
    eps, step = 0.1, 0.06
    adv = x.clone()
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    for _ in range(3):
        xg = adv.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(tiny_model(xg), y, reduction="sum").backward()
        adv = torch.max(torch.min(adv + step * xg.grad.sign(), hi), lo)
    out = make_attack("bim", eps=eps, steps=3, step_size=step)(tiny_model, x, y)
    assert torch.allclose(out, adv, atol=1e-6)


def test_pgd_with_zero_restarts_still_attacks_once(tiny_model, tiny_batch):
    x, y = tiny_batch
    out = make_attack("pgd", eps=0.25, steps=5, restarts=0)(tiny_model, x, y)
    assert not torch.equal(out, x)
    assert torch.equal(out, make_attack("pgd", eps=0.25, steps=5, restarts=1)(tiny_model, x, y))


def test_pgd_defaults_are_the_documented_ones():
    """40 steps of 0.25 eps from a random start, one restart (docs/EVAL.md's PGD)."""
    assert make_attack("pgd", eps=0.1).describe() == {
        "name": "pgd", "norm": "Linf", "eps": 0.1, "seed": 0, "steps": 40, "step_size": None,
        "rel_step": 0.25, "random_start": True, "restarts": 1}


def test_sign_steps_stay_in_the_image_range_inside_the_loop(tiny_model, tiny_batch):
    """The loop's own bounds keep every iterate in [0, 1] (not only the base class's final
    projection): on black and white images with a large eps, where a step past 0 or 1
    would change the next gradient."""
    from edgempir.attacks.pgd import sign_gradient_ascent

    _, y = tiny_batch
    x = torch.zeros(len(y), *tiny_batch[0].shape[1:])
    x[len(y) // 2:] = 1.0                       # half black, half white
    adv = sign_gradient_ascent(tiny_model, x, y, eps=0.5, step_size=0.3, steps=3)
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert (adv - x).abs().max() <= 0.5 + 1e-7
    assert (adv != x).any()                     # the steps moved some pixels inward


def _documented_defaults() -> dict[str, dict[str, str]]:
    """docs/EVAL.md's table of attacks: name -> {parameter: default as written}; what a
    row says in parentheses is commentary."""
    import re
    from pathlib import Path

    rows = {}
    doc = Path(__file__).resolve().parents[2] / "docs" / "EVAL.md"
    for line in doc.read_text().splitlines():
        m = re.match(r"\| `([a-z-]+)` \| [^|]+ \| (?:L-inf|L2) \| (.+) \|$", line)
        if not m:
            continue
        text = m.group(2)
        while re.search(r"\([^()]*\)", text):
            text = re.sub(r"\([^()]*\)", "", text)
        pairs = [p.split() for p in re.split(r"[,;]", text) if p.strip()]
        rows[m.group(1)] = {p[0]: p[1].strip("`") for p in pairs if len(p) >= 2}
    return rows


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_attacks_defaults_are_the_documented_ones(name):
    """docs/EVAL.md lists each attack's defaults (AutoAttack's standard settings for its
    components); a changed default changes every published number of that attack."""
    documented = _documented_defaults()
    assert name in documented, f"{name} is missing from docs/EVAL.md's table of attacks"
    attack = make_attack(name, eps=None if name == "cw" else 0.1)
    params = {k: v for k, v in attack.describe().items()
              if k not in ("name", "norm", "eps", "seed")}
    doc = documented[name]
    doc.pop("eps", None)  # cw's "eps None = unbounded"
    assert set(doc) == set(params), (name, doc, params)
    for key, value in params.items():
        written = doc[key]
        if isinstance(value, bool) or value is None or isinstance(value, str):
            assert written == str(value), (name, key, written, value)
        else:
            assert float(written) == value, (name, key, written, value)


def test_torchattacks_components_couple_their_batches_and_square_only_queries():
    """Eval's sharding relies on both (docs/DISTRIBUTED.md): a batch-coupled attack keeps
    batches that do not depend on the ranks, and a query-only one is never cut below its
    big batch."""
    from edgempir.attacks._torchattacks import TorchattacksAttack

    wrapped = {n for n, cls in REGISTRY.items() if issubclass(cls, TorchattacksAttack)}
    assert wrapped == {"apgd-ce", "apgd-t", "fab-t", "square"}
    assert all(REGISTRY[n].batch_coupled for n in wrapped)
    assert [n for n, cls in REGISTRY.items() if not cls.white_box] == ["square"]
    assert not make_attack("cw").batch_coupled and make_attack("cw", abort_early=True).batch_coupled


def test_cw_with_early_abort_runs_on_the_references_batches_of_100():
    """The early abort compares a whole batch's loss, so the batch decides the result
    (measured on the main job's run: CW at --batch-size 250 left the vote 61% accurate,
    in batches of ~37 50%); examples/mnist_attack.py runs CW in batches of min(n, 100)."""
    from edgempir.eval.shard import Shard, chunks_of

    cw = make_attack("cw", abort_early=True)
    assert cw.batch_rows == 100 and make_attack("cw").batch_rows is None
    rows = range(250)
    batches = chunks_of(Shard(), list(rows), cw.batch_rows, True, cw.batch_rows)
    assert [b.tolist() for b in batches] == [list(range(100)), list(range(100, 200)),
                                             list(range(200, 250))]


@pytest.mark.parametrize("steps", [0, 1, 2, 5])
def test_pgd_ref_is_the_references_madry_loop(tiny_model, tiny_batch, steps):
    """pgd-ref against a transcription of CleverHans' MadryEtAl as the EMPIR reference
    bundles it: start x + U(-eps, eps) without clipping, then per step FGM (step along the
    gradient's sign, clip to [0, 1]) and clip the perturbation to the eps ball. The model
    ignores the image's left half (zero gradient there: a sign of 0 moves nothing), and
    every point it is queried at after the start lies in [0, 1] and the ball."""
    x, y = tiny_batch
    eps, step = 0.3, 0.02
    mask = torch.ones_like(x[:1])
    mask[..., : x.shape[-1] // 2] = 0
    seen = []

    class Masked(torch.nn.Module):
        def forward(self, v):
            seen.append(v.detach().clone())
            return tiny_model(v * mask)

    model = Masked()
    attack = make_attack("pgd-ref", eps=eps, steps=steps, step_size=step, seed=4)
    got = attack(model, x, y)
    if steps == 0:
        assert torch.equal(got, x) and not seen
        return
    for v in seen[1:]:
        assert (v - x).abs().max() <= eps + 1e-6 and v.min() >= 0 and v.max() <= 1

    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(4))  # one draw
    adv = x + (2 * noise - 1) * eps
    assert adv.min() < 0 or adv.max() > 1, "the case must start outside the image domain"
    for _ in range(steps):
        v = adv.detach().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(tiny_model(v * mask), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, v)
        moved = (adv + step * grad.sign()).clamp(0.0, 1.0)
        adv = x + (moved - x).clamp(-eps, eps)
    torch.testing.assert_close(got, adv, rtol=0, atol=1e-6)
    assert (got - x).abs().max() <= eps + 1e-6 and got.min() >= 0 and got.max() <= 1


# at eps 0.03 no image reaches a wrong answer, at 0.1 some do (through the half the model sees)
@pytest.mark.parametrize("eps, some_broken", [(0.03, False), (0.1, True)])
def test_confident_pgd_keeps_the_most_confident_wrong_iterate(tiny_model, tiny_batch, eps,
                                                               some_broken):
    """confident-pgd against its specification written out: for each of the `targets`
    likeliest wrong classes, `steps` sign steps down the targeted cross-entropy inside the
    eps ball and [0, 1]; every iterate (the start included) is a candidate, and per image
    the result is the wrong-answer candidate of highest top probability (the first such on
    ties), else the last iterate of the last target."""
    x, y = tiny_batch
    rel_step, steps, n_targets = 0.25, 4, 2
    mask = torch.ones_like(x[:1])   # the model ignores the left half: zero gradients there
    mask[..., : x.shape[-1] // 2] = 0

    class Masked(torch.nn.Module):
        def forward(self, v):
            return tiny_model(v * mask)

    model = Masked()
    got = make_attack("confident-pgd", eps=eps, rel_step=rel_step, steps=steps,
                      targets=n_targets)(model, x, y)

    with torch.no_grad():
        clean = model(x).softmax(dim=1)
    wrong_classes = [[c for c in clean[i].argsort(descending=True).tolist() if c != y[i]]
                     for i in range(len(y))]
    candidates = []                          # every iterate, target-major then step
    for k in range(n_targets):
        target = torch.tensor([w[k] for w in wrong_classes])
        adv = x.clone()
        for s in range(steps + 1):
            candidates.append(adv.detach())
            if s == steps:
                break
            v = adv.detach().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(model(v), target, reduction="sum")
            (grad,) = torch.autograd.grad(loss, v)
            adv = torch.minimum(torch.maximum(v - rel_step * eps * grad.sign(),
                                              (x - eps).clamp(min=0)), (x + eps).clamp(max=1))
    stacked = torch.stack(candidates)        # [candidates, B, C, H, W]
    with torch.no_grad():
        probs = torch.stack([model(c).softmax(dim=1) for c in candidates])
    conf, pred = probs.max(dim=2)            # [candidates, B]
    score = torch.where(pred != y[None], conf, torch.full_like(conf, -1.0))
    pick = score.argmax(dim=0)               # the first of the highest
    expected = stacked[pick, torch.arange(len(y))]
    never = (score.max(dim=0).values < 0)
    expected[never] = stacked[-1][never]
    assert bool(never.all()) is not some_broken and bool(never.any())
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_confident_pgd_queries_stay_in_the_ball_and_targets_are_capped(tiny_model, tiny_batch):
    """Every input the attack shows the model lies in the eps ball and [0, 1] (the final
    projection would hide an iterate that left them, but not the choice it led to); more
    targets than wrong classes attack every wrong class once."""
    x, y = tiny_batch
    eps = 0.1
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, v):
            seen.append(v.detach().clone())
            return tiny_model(v)

    make_attack("confident-pgd", eps=eps, steps=3, rel_step=0.5, targets=20)(Spy(), x, y)
    assert len(seen) == 1 + 9 * 4          # the clean pass, then 9 targets x (3 steps + 1)
    for v in seen:
        assert (v - x).abs().max() <= eps + 1e-6 and v.min() >= 0 and v.max() <= 1
