"""lab.config: RunConfig refuses an unknown method and a batch that micro-batches do not divide."""

import pytest

import lab


def test_unknown_method_and_bad_batch():
    with pytest.raises(ValueError, match="unknown method"):
        lab.RunConfig(method="loha")
    with pytest.raises(ValueError, match="multiple of micro_batch_size"):
        lab.RunConfig(batch_size=10, micro_batch_size=4)
