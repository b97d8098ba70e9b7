"""Performance benchmarks of ElasticAST against its limits and against transformers' AST.

Run `python -m benchmarks.run --size tiny|base --out results.json`; see `benchmarks/run.py`. Every figure that
compares speed is a ratio of two timings taken side by side in the same run, interleaved, best of the repeats.
"""
