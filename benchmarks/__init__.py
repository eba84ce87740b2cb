"""Speed benchmarks: each script times one part of the library (the train step, its
pieces, the evaluation, the input pipelines, convolutions, the whole command, the deep
models on an accelerator) against the machine's own limit or another framework, measured
in the same run, and prints the figures; none runs as a test. Run each from the repository
root as ``python -m benchmarks.NAME`` (``--help`` lists its options); ``accelerator.sh``
runs them on a GPU. The figures measured so far are in ``benchmarks/README.md``.
"""
