"""The mulan_ppl benchmark suite: ratios measured side by side in one run (``python -m benchmarks``)."""
