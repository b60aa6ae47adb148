"""WorstCase (edgempir/eval/worstcase.py) in detail: the bookkeeping behind every robust-accuracy
figure (found by mutation testing, docs/TESTING.md)."""
from __future__ import annotations
