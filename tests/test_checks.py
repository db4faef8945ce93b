"""The printed checks state the bound that was tested, not a rounding of it."""

import pytest

from pclib import checks


@pytest.mark.parametrize("bound, shown", [(1e-6, "1e-06"), (0.2, "2e-01"), (1.5, "1.5"), (2.5, "2.5"),
                                          (0.25, "0.25"), (1e-10, "1e-10"), (3.0, "3e+00")])
def test_bound_is_printed_exactly(capsys, bound, shown):
    checks.check_below("gap", 0.1, bound)
    checks.check_above("gap", 0.1, bound)
    below, above = capsys.readouterr().out.splitlines()
    assert below == f"gap = 1.0e-01 < {shown}: {0.1 < bound}"
    assert above == f"gap = 1.0e-01 > {shown}: {0.1 > bound}"
    assert float(shown) == bound
