"""Named, reproducible benchmarks: ``python -m benchmarks NAME`` writes JSON + a plot to results/."""
