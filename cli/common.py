"""Options shared by several commands (torch-free)."""
from __future__ import annotations

import click

seed_option = click.option("--seed", type=int, default=0, help="Random seed.")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print only JSON on stdout (no table, no progress).")
