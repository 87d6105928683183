"""Run directories that survive their users: one process per run, resume from the newest valid
checkpoint of the same configuration, atomic writes, and a status record per run.

A run directory ``outputs/runs/<name>/`` is owned by one ``scalelong-train`` at a time (``lock``);
``status.json`` says whether its last attempt is running, completed or failed (and why), which
``scalelong-aggregate`` reports for every job of a sweep (``status``).

- ``checkpoints``: checkpoint files written atomically, read safely, found newest first.
- ``lock``: the run directory's lock.
- ``resume``: the checkpoint a run continues from, refused when a result-changing setting differs
  (``scalelong.result_keys``), and the archive of a previous attempt.
- ``status``: ``status.json``, and the one reader of run directories (not the attempts under ``previous/``).
- ``record``: ``.hydra/`` and ``train.log``, written once an attempt is accepted.
- ``callbacks``: the Lightning callbacks that keep a run's files consistent with its checkpoints
  (``RunFiles``, SIGTERM) and save interval checkpoints after validation (``StepCheckpoint``).
- ``hydra_callbacks``: the Hydra callbacks that check the output directory, report a sweep, and end a
  sweep's worker processes with it.
"""
