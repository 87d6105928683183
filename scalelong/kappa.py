"""``scalelong-kappa``: print the paper's Sec. 4.1 range for κ of constant scaling (``cs``).

    scalelong-kappa data=cifar10 model=uvit_s2_cifar10
    scalelong-kappa data=fashion_mnist model=unet_small diffusion=cosine kappa_tool.num_images=5000

Measures r_t = ‖ε_t‖²/‖x_t‖² on the data and noise schedule of the composed config and solves the
range for the model's number of long skips; the math is :mod:`scalelong.kappa_range`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from scalelong.config import CONF_DIR
from scalelong.errors import exit_on_user_error
from scalelong.kappa_range import kappa_for_config


def report(cfg: DictConfig) -> None:
    """Print the Sec. 4.1 report for the composed config."""
    print(kappa_for_config(cfg, report=True)[1])


@hydra.main(config_path=str(CONF_DIR), config_name="kappa", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Console entry point (``scalelong-kappa data=... model=...``)."""
    exit_on_user_error("scalelong-kappa", report, cfg)


if __name__ == "__main__":
    main()
