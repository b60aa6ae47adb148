"""The honest paragraphs of docs/RESULTS.md, written from the figures: only the sentences
whose rows exist, with differences under two standard errors called ties."""
from __future__ import annotations

import math

from edgempir.experiment.tables import compute_of, plural, ratio, si
from edgempir.tables import pct


def _find(results: dict, model: str, protocol: str, spec: str | None = None,
          member: bool = False) -> list[dict]:
    return [r for r in results["rows"] if r["model"] == model and r["protocol"] == protocol
            and (r["member"] is not None) == member and (spec is None or r["spec"] == spec)]


def _one(results, *args, **kw) -> dict | None:
    found = _find(results, *args, **kw)
    return found[0] if found else None


def _margin(n: int) -> float:
    """Two standard errors of an accuracy at its worst (p = 0.5), in points: what n images
    can resolve (the rows share the images, so this is conservative for differences)."""
    return 2 * 100 * math.sqrt(0.25 / max(n, 1))


def _compare(diff: float, margin: float, more: str, less: str, same: str) -> str:
    return more if diff > margin else less if diff < -margin else same


def findings(results: dict) -> list[str]:
    """The honest paragraphs, from the figures (only the sentences whose rows exist; the
    wording follows the figures, with differences under two standard errors called ties)."""
    paper = _one(results, "empir", "paper")
    adap = _one(results, "empir", "adaptive")
    fp = _one(results, "empir", "adaptive", "fp32", member=True)
    fp_paper = _one(results, "empir", "paper", "fp32", member=True)
    low = [r for r in _find(results, "empir", "adaptive", member=True) if r["spec"] != "fp32"]
    adv = _one(results, "empir-adv", "adaptive")
    fadv = _one(results, "fp32-adv", "adaptive")
    n = results["settings"]["n"]
    margin = _margin(n)
    out = []
    paper_gain = None
    if paper and fp_paper:
        paper_gain = 100 * (paper["mean_of_attacks"] - fp_paper["mean_of_attacks"])
        out.append(
            f"Scored as the paper scored it (protocol paper, {paper['config']}), EMPIR keeps "
            f"{pct(paper['worst_case'])} worst case over FGSM/BIM/PGD and "
            f"{pct(paper['mean_of_attacks'])} by the paper's mean of attacks (CW-L2 "
            f"included), against {pct(fp_paper['worst_case'])} and "
            f"{pct(fp_paper['mean_of_attacks'])} for its fp32 member alone"
            + _compare(paper_gain, margin, ": the kind of gain the paper reports.",
                       ": not even the paper's protocol shows a gain here.",
                       ": no gain, even under the paper's protocol."))
    if adap and fp:
        gain = 100 * (adap["worst_case"] - fp["worst_case"])
        lows = " and ".join(pct(r["worst_case"]) for r in low)
        cost = ratio(compute_of(adap, "macs"), compute_of(fp, "macs"))
        verdict = _compare(gain, margin, f"EMPIR buys {gain:.1f} points of worst-case accuracy "
                           "over its fp32 member", f"EMPIR is {-gain:.1f} points less robust "
                           "than its fp32 member", f"EMPIR and its fp32 member are within "
                           f"{abs(gain):.1f} points (a tie at this n)")
        out.append(
            f"Attacked as it is deployed (protocol adaptive, {adap['config']}: PGD and APGD "
            "through the members' mean softmax and the straight-through quantizers, Square, "
            "transfer from each member; worst case per image), EMPIR keeps "
            f"{pct(adap['worst_case'])}, its fp32 member alone {pct(fp['worst_case'])}"
            + (f" and its low-bit members alone {lows}" if lows else "")
            + f". {verdict}, for {cost} the inference MACs"
            + (f"; the paper's protocol suggested {paper_gain:.0f} points."
               if paper_gain is not None and paper_gain > gain + margin else "."))
    paragraphs = [" ".join(out)] if out else []
    if adv and fadv:
        paragraphs.append(" ".join(_adv_findings(results, adv, fadv, adap, margin)))
        paragraphs.append(_limits(results, [adv, fadv], adap))
    if paragraphs:
        paragraphs[-1] += (f" Noise: on n={n} images one standard error of an accuracy is at "
                           f"most {margin / 2:.1f} points; differences under {margin:.1f} "
                           "points are called ties above.")
    return paragraphs


def _adv_findings(results, adv, fadv, adap, margin) -> list[str]:
    s = results["settings"]
    macs = ratio(compute_of(adv, "macs"), compute_of(fadv, "macs"))
    bops = ratio(compute_of(adv, "bit_ops"), compute_of(fadv, "bit_ops"))
    size = ratio(compute_of(adv, "weights"), compute_of(fadv, "weights"))
    how = (f"PGD-{s['adv_steps']}, eps {s['adv_eps']:g}, {plural(s['adv_epochs'], 'epoch')} "
           "per member")
    out = []
    if adap:
        lift = 100 * (adv["worst_case"] - adap["worst_case"])
        out.append(_compare(
            lift, margin, f"Adversarial training moves the number: with PGD-trained members "
            f"({how}) EMPIR keeps {pct(adv['worst_case'])} under protocol adaptive "
            f"({lift:+.1f} points) at {pct(adv['clean'])} clean "
            f"({pct(adap['clean'])} with default training).",
            f"Adversarially trained members ({how}) did not help here: EMPIR keeps "
            f"{pct(adv['worst_case'])} under protocol adaptive at {pct(adv['clean'])} clean.",
            f"Adversarially trained members ({how}) changed little: EMPIR keeps "
            f"{pct(adv['worst_case'])} under protocol adaptive at {pct(adv['clean'])} clean."))
    diff = 100 * (adv["worst_case"] - fadv["worst_case"])
    out.append(
        f"One PGD-trained fp32 model given the same training compute "
        f"({si(compute_of(fadv, 'train_passes'))} training passes, as many as the members "
        f"together) keeps {pct(fadv['worst_case'])} at {pct(fadv['clean'])} clean; the "
        f"ensemble costs {macs} its inference MACs ({bops} its bit-operations) and {size} its "
        "packed weight bytes.")
    out.append(_compare(
        diff, margin, f"At equal training compute the ensemble of adversarially trained "
        f"members is {diff:.1f} points more robust than the single model: here mixing "
        "precisions adds robustness on top of adversarial training, at the inference cost "
        "above.",
        f"At equal training compute the single model is {-diff:.1f} points more robust: "
        "spending the compute on one adversarially trained model beats EMPIR.",
        f"At equal training compute the two are within {abs(diff):.1f} points (a tie at this "
        "n): the mixed-precision ensemble adds inference cost, not robustness."))
    return out


def _limits(results: dict, adv_rows: list[dict], default: dict | None) -> str:
    s = results["settings"]
    cleans = sorted(r["clean"] for r in adv_rows)
    text = (f"Limits: the adversarial models were trained briefly ("
            f"{plural(s['adv_epochs'], 'epoch')} of PGD-{s['adv_steps']} per member, to fit "
            f"the time budget of a 2-core CPU; clean accuracy {pct(cleans[0])} to "
            f"{pct(cleans[-1])}" + (f" against {pct(default['clean'])} with default "
                                     "training" if default else "")
            + "); longer training raises both adversarial rows and may change their order.")
    if s["config"] == "quick":
        text += (" Every row uses eval configuration quick: upper bounds on what standard "
                 "would report.")
    return text
