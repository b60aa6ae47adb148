"""bench's Square attack on the deployed engine keeps docs/BENCH.md's promises: eps is the
bundle's adversarial eps (as the host's float32 had it), no image costs more queries than
the budget, robust accuracy <= clean accuracy on the same images, the result stays in the
ball. (Its strength is tested in tests/targets/test_square.py; on the tiny bundle's linear
members 300 queries at eps 0.1 break none of these 40 images, measured.)"""
from __future__ import annotations

import numpy as np

from edgempir.targets.device.bench import BenchConfig, run_bench

QUERIES, N = 60, 40


def test_square_on_the_engine(tiny_bundle):
    r = run_bench(tiny_bundle, BenchConfig(batch_sizes=(2,), repeats=3, warmup=1, memory=False,
                                           square_queries=QUERIES, square_n=N))
    sq = r["square"]
    assert sq["eps"] == float(np.float32(0.1)) == float(np.float32(r["bundle"]["eval"]["adv_eps"]))
    assert sq["queries"] == QUERIES and sq["n"] == N and sq["p_init"] == 0.8
    for which in ("ensemble", "fp32_member"):
        res = sq[which]
        assert res["n"] == N
        assert res["robust_accuracy"] <= res["clean_accuracy"]
        assert res["max_perturbation"] <= sq["eps"] + 1e-6
        assert res["iterations"] <= QUERIES - 1
        assert res["queries_total"] <= N * QUERIES                  # the budget, per image
        if res["queries_median_success"] is not None:
            assert 1 <= res["queries_median_success"] <= QUERIES
