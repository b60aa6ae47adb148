"""The training table (host side); eval's tables and plot are :mod:`edgempir.eval.table`.

The table layout itself is :mod:`edgempir.tables` (device-safe: bench prints with it too).
"""
from __future__ import annotations

from edgempir.tables import format_table, pct

__all__ = ["format_table", "pct", "training_table"]


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
