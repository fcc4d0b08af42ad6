"""The benchmark suite: suites declared as data, one results file per suite, one report.

    python -m datadistill.bench list                       # suites and their rows
    python -m datadistill.bench run SUITE [--resume] [--only ROW ...]
    python -m datadistill.bench report                     # regenerates BENCHMARKS.md

A suite is a TOML file in ``bench/suites/`` (``suites.py`` reads it); each row is one
benchmark: distil a dataset to a budget and evaluate it (``kind = "accuracy"``, coresets
included) or time a few iterations (``kind = "speed"``). ``execute.py`` runs each row in a
fresh child process (so peak RSS and CPU time belong to that row; an accuracy row's work:
``accuracy.py``; CPU and RSS: ``measure.py``) and writes
``bench/results/<suite>.json`` (``results.py``) after every row; ``report/`` turns every
results file into ``BENCHMARKS.md``. Every call into the library lives in ``runner.py``.

Time is process CPU time (user + sys, all threads, waited-for children included) in
CPU-seconds, with the thread count stated beside it; memory is peak RSS in bytes.
"""
