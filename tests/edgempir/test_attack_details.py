"""Details of the attacks that the strength and threat-model tests leave open (found by
mutation testing, docs/TESTING.md): parameters, restarts, keepers, coalitions."""
from __future__ import annotations
