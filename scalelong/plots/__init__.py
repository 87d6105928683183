"""Reading runs' logged measurements back and drawing them: the library behind ``scalelong-dashboard``.

* :mod:`~scalelong.plots.metrics` — a run's series from ``csv/metrics.csv`` and its label.
* :mod:`~scalelong.plots.figures` — one function per figure (also the r_t histogram of the noise-ratio callback).
* :mod:`~scalelong.plots.page` — run-level oscillation numbers, the CSV summaries and ``index.html``.
* :mod:`~scalelong.plots.workspace` — the wandb workspace with the same panels.
"""
