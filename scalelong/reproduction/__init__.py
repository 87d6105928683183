"""The CPU reproductions of the paper's claims: a study (``conf/reproduction/<name>.yaml``: backbone, recipe,
sweeps, prose) is trained by ``scripts/cpu_reproduction.py`` and reported by ``scalelong-report``.

- :mod:`~scalelong.reproduction.study`: the study record;
- :mod:`~scalelong.reproduction.results`: runs read back from their directories (or committed CSVs), grouped
  into cells of seeds;
- :mod:`~scalelong.reproduction.claims`: each claim as comparisons over seeds, and the verdict rule;
- :mod:`~scalelong.reproduction.report`: the Markdown page, its figures and raw summaries.
"""

from scalelong.reproduction.report import BUDGET_FILE, write_report
from scalelong.reproduction.study import Study, load_study, studies

__all__ = ["BUDGET_FILE", "Study", "load_study", "studies", "write_report"]
