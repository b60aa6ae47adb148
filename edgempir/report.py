"""Readable tables (and, for ``eval``, JSON reports and plots). Torch-free."""
from __future__ import annotations


def format_table(headers: list[str], rows: list[list], title: str | None = None) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [title] if title else []
    out += [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(out)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def training_table(manifest: dict) -> str:
    ds = manifest["dataset"]
    rows = [[f"member {m['index']}", m["spec"], pct(m["clean_accuracy"]),
             f"{sum(m['time_per_epoch_s']):.0f} s"] for m in manifest["members"]]
    ens = manifest["metrics"]["clean_accuracy"]["ensemble"]
    for comb, acc in ens.items():
        mark = " (deployed)" if comb == manifest["combiner"] else ""
        rows.append([f"ensemble {comb}{mark}", "+".join(m["spec"] for m in manifest["members"]),
                     pct(acc), ""])
    return format_table(["model", "bits", "clean accuracy", "train time"], rows,
                        title=f"Clean test accuracy on {ds['name']} ({ds['n_test']} test images, "
                              f"arch {manifest['arch']}); protocol: clean, no attack")
