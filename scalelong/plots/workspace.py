"""A saved wandb workspace with the dashboard's panels (``scalelong-dashboard --wandb ENTITY/PROJECT``).

Needs the ``wandb-workspaces`` package (``pip install -e '.[wandb]'``).
"""

from __future__ import annotations

from collections.abc import Sequence

from scalelong.errors import ScaleLongError


def build_workspace(entity: str, project: str, num_skips: int, name: str = "scalelong stability"):
    """A ``wandb_workspaces`` Workspace with the dashboard's panels (not saved).

    Sections: losses, feature energy per level, feature oscillation, gradient norms and their
    oscillation, κ, noise ratio, robustness. Block names follow U-ViT and the conv UNet
    (``in_block_1`` … ``in_block_N``, ``mid_block``, ``out_block_1`` … ``out_block_N``).
    """
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError as err:
        raise ScaleLongError("--wandb needs the wandb-workspaces package: pip install wandb-workspaces "
                             "(or pip install -e '.[wandb]')") from err

    x = "trainer/global_step"
    skips = range(1, num_skips + 1)
    blocks = [f"in_block_{k}" for k in skips] + ["mid_block"] + [f"out_block_{k}" for k in skips]

    def line(title: str, keys: Sequence[str], log_y: bool = False) -> wr.LinePlot:
        return wr.LinePlot(title=title, x=x, y=list(keys), log_y=log_y or None)

    sections = [
        ws.Section(name="Losses", is_open=True, panels=[
            line("val/loss", ["val/loss"], True), line("train/loss", ["train/loss"], True),
            line("loss by timestep quartile", [f"loss_t/q{q}" for q in range(1, 5)], True),
            line("loss spikes (cumulative)", ["loss/spikes"]),
        ]),
        ws.Section(name="Feature energy per decoder level (Thm 3.1)", is_open=True, panels=[
            line(f"F(h_{i})", [f"feat/level_{i}"], True) for i in skips
        ]),
        ws.Section(name="Feature energy per skip", panels=[
            line(f"F(s_{i}) and F(κ_{i} s_{i})", [f"feat/skip_{i}", f"feat/skip_{i}_scaled"], True) for i in skips
        ]),
        ws.Section(name="Feature oscillation", is_open=True, panels=[
            line("mean mrc over feature series", ["osc/feat/mean/mrc"]),
            line("mean rstd over feature series", ["osc/feat/mean/rstd"]),
            *[line(f"mrc of F(h_{i})", [f"osc/feat/level_{i}/mrc"]) for i in skips],
        ]),
        ws.Section(name="Gradient norms (Thm 3.3)", panels=[
            line("total", ["grad/total"], True), *[line(b, [f"grad/{b}"], True) for b in blocks]
        ]),
        ws.Section(name="Gradient oscillation", panels=[
            line("mean mrc over blocks", ["osc/grad/mean/mrc"]), line("mean rstd over blocks", ["osc/grad/mean/rstd"]),
            *[line(f"mrc {b}", [f"osc/grad/{b}/mrc"]) for b in blocks],
        ]),
        ws.Section(name="κ readout (Fig. 7)", panels=[
            *[line(f"κ_{i}", [f"kappa/skip_{i}"]) for i in skips],
            line("LS fit κ", ["ls/fit_kappa"]), line("LS fit R² (log space)", ["ls/fit_r2"]),
        ]),
        ws.Section(name="Noise ratio (Fig. 3)", panels=[
            wr.MediaBrowser(title="r_t histogram", media_keys=["noise_ratio/hist"]),
            wr.ScalarChart(title="mean r_t", metric="noise_ratio/mean"),
            wr.ScalarChart(title="q97 r_t", metric="noise_ratio/q97"),
            wr.ScalarChart(title="E|x_t|²/m", metric="noise_ratio/xt_energy"),
        ]),
        ws.Section(name="Robustness (Thm 3.4, Fig. 11)", panels=[
            line("|net(x+δ)−net(x)|/|δ|", [f"robust/ratio/delta_{s:g}" for s in (1e-3, 1e-2, 1e-1)], True),
            line("Jacobian spectral norm", ["robust/jacobian"], True),
            line("M0 and per-level |b_i∘a_i|", ["robust/m0", *[f"robust/m0/level_{i}" for i in skips]], True),
        ]),
    ]
    return ws.Workspace(entity=entity, project=project, name=name, sections=sections)
