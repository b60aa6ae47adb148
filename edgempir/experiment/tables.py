"""The experiment's tables, as text for the terminal and as markdown, and the formatting of
their figures (torch-free).

Every accuracy printed or written carries its protocol, configuration and n: a figure
without the attack that produced it is not one a safety case can cite."""
from __future__ import annotations

from edgempir.tables import format_table, pct


def si(x, unit: str = "") -> str:
    if x is None:
        return "-"
    for div, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f} {prefix}{unit}"
    return f"{x:.0f} {unit}".strip()


def byte_size(x) -> str:
    if x is None:
        return "-"
    return f"{x / 1e6:.2f} MB" if x >= 1e5 else f"{x / 1e3:.1f} kB"


def proto_label(row: dict) -> str:
    return f"{row['protocol']} ({row['config']}, n={row['n']})"


def compute_of(row: dict, key: str):
    c = row.get("compute") or {}
    if key == "weights":
        return (c.get("weight_bytes") or {}).get("packed")
    return c.get(key)


def summary_rows(results: dict) -> list[list[str]]:
    return [[r["label"], proto_label(r), pct(r["clean"]), pct(r["worst_case"]),
             pct(r.get("mean_of_attacks")) if r["protocol"] == "paper" else "",
             si(compute_of(r, "macs")), si(compute_of(r, "bit_ops")),
             byte_size(compute_of(r, "weights")), si(compute_of(r, "train_passes"))]
            for r in results["rows"]]


SUMMARY_HEADERS = ["model", "protocol (config, n)", "clean", "worst case", "paper: mean of attacks",
                   "MACs/image", "BOPs/image", "weights (packed)", "training passes"]


ATTACK_HEADERS = ["model", "protocol (config, n)", "accuracy per attack"]


def attack_rows(results: dict) -> list[list[str]]:
    rows = []
    for r in results["rows"]:
        notes = r.get("attack_notes") or {}
        parts = [f"{name}{' (' + notes[name] + ')' if name in notes else ''} {pct(v)}"
                 for name, v in r["attacks"].items()]
        rows.append([r["label"], proto_label(r), "; ".join(parts)])
    return rows


def text_table(results: dict) -> str:
    """The readable table printed at the end of the command."""
    s = results["settings"]
    title = (f"Paper vs adaptive on {results['dataset']}, eps {results['eps']:g} "
             f"(L-inf), seed {s['seed']}; eval config {s['config']} (see "
             "config_label in results.json); worst case = per image over the protocol's "
             "attacks; training passes = forward/backward passes over a batch")
    blocks = [format_table(SUMMARY_HEADERS, summary_rows(results), title=title),
              format_table(ATTACK_HEADERS,
                           attack_rows(results), title="Accuracy per attack")]
    if results["missing"]:
        blocks.append("not done yet: " + ", ".join(results["missing"])
                      + " (rerun the same command to continue)")
    return "\n\n".join(blocks)


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def plural(k: int, word: str) -> str:
    return f"{k} {word}" if k == 1 else f"{k} {word}s"


def ratio(a, b) -> str:
    if not a or not b:
        return "-"
    r = a / b
    return f"{r:.2f}x" if r >= 0.995 else f"{r:.2f}x ({100 * r:.0f}%)"
