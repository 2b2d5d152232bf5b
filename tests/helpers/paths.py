"""Where the tests find the checkout: the repository, its package and configs, the tests' own data."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
# The official demo's results file (see tests/data/): what the tokenizer is checked on.
FAKECAP = TESTS / "data" / "captions_val2014_fakecap_results.json"
