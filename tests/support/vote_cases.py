"""Hand-made early-exit vote cases, shared by the numpy/torch tests and the ONNX graph tests
(``import vote_cases``: tests/support is on the test path)."""
import numpy as np


def logits_for(preds_per_member, classes=4):
    """[M, B, C] logits whose argmax per member and image is the given class."""
    p = np.asarray(preds_per_member)
    out = np.zeros(p.shape + (classes,), dtype=np.float32)
    for idx in np.ndindex(p.shape):
        out[idx + (p[idx],)] = 1.0
    return out


# (member predictions [M][B], reference, members expected to run [M][B] (1/0)).
# M = 3, reference last (members w2a4, w2a4, fp32): m0 if m0 == m1 else m_ref
CASES_3 = [
    # pair agrees (the reference disagrees, or agrees): the reference is not run
    ([[1, 2], [1, 2], [0, 2]], 2, [[1, 1], [1, 1], [0, 0]]),
    # pair disagrees, the reference agrees with one of them / with the other
    ([[1, 1], [2, 2], [1, 2]], 2, [[1, 1], [1, 1], [1, 1]]),
    # all differ: the reference decides
    ([[0], [1], [2]], 2, [[1], [1], [1]]),
]
# M = 5, reference last: three always run; the 4th only where it can still matter
CASES_5 = [
    # 3 of the first 3 agree: done
    ([[3], [3], [3], [0], [1]], 4, [[1], [1], [1], [0], [0]]),
    # 2-1, the 4th makes 3 of 5: done without the reference
    ([[3], [3], [1], [3], [1]], 4, [[1], [1], [1], [1], [0]]),
    # 2-1, the 4th disagrees: the reference decides (agrees with the pair / with the one)
    ([[3, 3], [3, 3], [1, 1], [0, 0], [3, 1]], 4, [[1, 1], [1, 1], [1, 1], [1, 1], [1, 1]]),
    # 1-1-1: no class can reach 3 without the reference: the 4th is skipped
    ([[0, 0], [1, 1], [2, 2], [0, 3], [0, 3]], 4, [[1, 1], [1, 1], [1, 1], [0, 0], [1, 1]]),
    # 2-2 after four: the reference breaks it (its vote makes 3)
    ([[0], [1], [0], [1], [1]], 4, [[1], [1], [1], [1], [1]]),
]
CASES = CASES_3 + CASES_5
