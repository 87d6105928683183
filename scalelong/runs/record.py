"""What a run directory records of an attempt it accepted: ``.hydra/`` (the composed config, the command-line
overrides and Hydra's own config, as Hydra saves them) and ``train.log``.

Hydra writes both before the task starts, so a command that is then refused (the run directory in use, a
stored run of other settings) would relabel the run it refused. ``conf/train.yaml`` turns that writing off
(``hydra.output_subdir: null``, a job logging to the console only); ``scalelong-train`` writes the record
here once the attempt is accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from scalelong.atomic import write_atomic

HYDRA_DIR = ".hydra"
LOG_FILE = "train.log"
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] %(message)s"


def save_hydra_record(run_dir: Path, cfg: DictConfig) -> None:
    """``<run dir>/.hydra/{config,hydra,overrides}.yaml`` of this command, as Hydra would have saved them
    (nothing outside a Hydra job, e.g. a run started from Python)."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.instance().cfg  # {"hydra": ...}
    out = Path(run_dir) / HYDRA_DIR
    out.mkdir(parents=True, exist_ok=True)
    overrides = hydra_cfg.hydra.overrides.task
    for name, node in (("config.yaml", cfg), ("hydra.yaml", hydra_cfg), ("overrides.yaml", overrides)):
        write_atomic(out / name, OmegaConf.to_yaml(node))


class _RunLogHandler(logging.FileHandler):
    """``train.log``: a record it cannot write (a full disk) stays on the console, without logging's traceback
    per record; the run's own error names the full disk."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


@contextmanager
def run_log(run_dir: Path) -> Iterator[None]:
    """Append the log of this process to ``<run dir>/train.log`` while the attempt runs, in the console's format."""
    root = logging.getLogger()
    handler = _RunLogHandler(Path(run_dir) / LOG_FILE)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
