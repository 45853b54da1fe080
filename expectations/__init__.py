"""The expectation suites installed with normlab as ``normlab.expectations`` (the default pipeline's digits.json)."""
