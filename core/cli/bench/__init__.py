"""The machinery of ``torpor bench`` (the click command is ``torpor.cli._bench``).

``_runner``: interleaved repetitions and paired ratios; ``_cases`` and ``_scaling``:
what every backend runs; ``_profiles`` and one module per backend (``_ets_like``,
``_lmdb``): raw-engine baselines and reference code paths; ``_memory``: tracemalloc
figures; ``_goals``: issue 9's goals; ``_report``, ``_json``, ``_plot``: output.
docs/performance.md explains every figure.
"""
