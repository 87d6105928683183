"""Lightning callbacks: sample grids and the stability measurements of docs/metrics.md.

Stability callbacks (``callbacks=stability`` turns all of them on; keys in docs/metrics.md):

* :class:`FeatureOscillation` — feature energies of skips and decoder levels, oscillation.
* :class:`GradientOscillation` — per-block gradient norms, oscillation, loss spikes.
* :class:`KappaReadout` — κ_i of every scaler; LS gates by the Fig. 7 protocol.
* :class:`NoiseRatio` — r_t = ‖ε_t‖²/‖x_t‖² of the data (Fig. 3a–b), once.
* :class:`Robustness` — input sensitivity and Jacobian norms (Thm 3.4, App. Fig. 11).
* :class:`TimestepLoss` — training loss by timestep quartile.
"""

from scalelong.callbacks.features import FeatureOscillation
from scalelong.callbacks.gradients import GradientOscillation
from scalelong.callbacks.kappa import KappaReadout
from scalelong.callbacks.noise_ratio import NoiseRatio
from scalelong.callbacks.robustness import Robustness
from scalelong.callbacks.samples import SampleGrid
from scalelong.callbacks.timestep_loss import TimestepLoss

__all__ = [
    "FeatureOscillation", "GradientOscillation", "KappaReadout", "NoiseRatio", "Robustness", "SampleGrid",
    "TimestepLoss",
]
