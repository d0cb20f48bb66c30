"""reelhook's benchmarks: `make bench` (python -m bench). They measure; they never pass or fail on a number."""
