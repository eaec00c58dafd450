"""The suite's time budget: how many examples a test whose every example compiles may draw."""

import os


def examples(n: int) -> int:
    """Returns ``n`` times RNNJAX_EXAMPLES_SCALE (default 1), at least 1.

    ``n`` keeps the suite within its time budget; RNNJAX_EXAMPLES_SCALE=10 (say) runs ten
    times as many, derandomized all the same, for a thorough check before a release.
    """
    return max(1, int(n * float(os.environ.get("RNNJAX_EXAMPLES_SCALE", "1"))))
