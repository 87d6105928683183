"""Evaluation (docs/metrics.md "FID" and "Convergence speed-up"): FID/KID features and statistics,
domain-feature FID, convergence speed-up.

- :mod:`scalelong.eval.inception`: Inception-v3 2015-12-05 pool3 features and where the weights come from.
- :mod:`scalelong.eval.domain`: a small classifier trained once per dataset for the CPU-scale ``fid_<name>``.
- :mod:`scalelong.eval.fid`: Fréchet distance, cached reference statistics, torchmetrics FID/KID.
- :mod:`scalelong.eval.speedup`: steps to a target value and speed-up over a baseline run.
- :mod:`scalelong.eval.reference`: the extractor and reference statistics FID compares samples to, KID,
  and the checks of a sampling setting, shared by ``scalelong-eval`` and the FID callback.
- :mod:`scalelong.eval.denoise`: the Wiener-filter baseline of denoising quality.
- :mod:`scalelong.eval.cli`: ``scalelong-eval``, FID/KID of a checkpoint's samples against its dataset.
"""
