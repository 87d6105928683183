"""The paper's claims as comparisons over seeds, and the rule that turns them into a verdict.

The decision rule, the same for every claim: "A < B" holds when the ±1 std intervals over seeds separate
(:func:`scalelong.stats.compare`), the opposite holds when they separate the other way, and otherwise the
comparison is unclear. A claim is *reproduced* when every comparison it makes holds, *not reproduced* when
none holds and at least one goes the other way, and *inconclusive at this scale* otherwise (or when a cell
has fewer than 2 seeds). So no verdict rests on one seed.

Each claim is a function of a :class:`~scalelong.reproduction.results.Sweep` returning a :class:`Section`:
the paper's statement, tables, a figure (:mod:`scalelong.plots.reproduction`) and its comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from scalelong.plots.reproduction import (
    bar_panels,
    cell_label,
    curve_panels,
    frontier_panels,
    learned_kappa_panels,
    stat_lines,
)
from scalelong.reproduction.results import ENDED, RunResult, Sweep, pairs
from scalelong.stats import Stat, compare, markdown_table, stat

SPEEDUP_CLAIM = 1.5  # the paper's "at least 1.5x fewer steps"
# Speed-up targets: none's FID at this fraction of training. Under cosine decay every curve falls until the last
# step, so none's final FID is reached by the others at the end or never; half-way is reachable by all.
SPEEDUP_AT = (0.5, 1.0)
LS_DECAY_BOUND = 0.95  # a learned decay must be at least as steep as the top of the paper's κ range [0.5, 0.95]
FRONTIER_TOLERANCE = 0.10  # a scaler still trains at an lr when its FID is within 10% of its best lr's
# One seed has collapsed when its final FID is this many times its method's best mean over the lr grid (a model that
# predicts zero sits at about 2×: FID 16 against 8 on the U-ViT digits); seed-to-seed spread stays well below it.
COLLAPSE_RATIO = 1.5
METHODS = ("none", "uniform", "cs", "cs_reversed", "ls")
SCALED = ("cs", "ls")  # the paper's two methods, tested against none (and uniform)


@dataclass(frozen=True)
class Check:
    """One comparison a claim makes: a against b (another cell's :class:`Stat`, or a fixed threshold) and the
    order the paper expects, ``"<"`` or ``">"``."""

    text: str
    a: Stat
    b: Stat | float
    expected: str
    part: str = ""  # which part of a claim with several (e.g. "grows with N", "reduced by cs/ls")

    @property
    def outcome(self) -> str:
        """``holds``, ``opposite``, or ``unclear`` (intervals overlap, or fewer than 2 seeds)."""
        b = self.b if isinstance(self.b, Stat) else Stat(self.b, 0.0, math.inf)
        found = compare(self.a, b)
        return "holds" if found == self.expected else "unclear" if found == "?" else "opposite"

    def __str__(self) -> str:
        return f"{self.text}: {self.a} vs {self.b} → {self.outcome}"


def verdict(checks: Sequence[Check], missing: str = "the runs it needs are missing") -> tuple[str, str]:
    """(verdict, reason) of a claim from its comparisons (the rule of the module docstring)."""
    if not checks or all(c.a.missing or (isinstance(c.b, Stat) and c.b.missing) for c in checks):
        return "inconclusive at this scale", missing
    counts = {o: sum(c.outcome == o for c in checks) for o in ("holds", "opposite", "unclear")}
    reason = (f"{counts['holds']} of {len(checks)} comparisons hold, {counts['opposite']} go the other way, "
              f"{counts['unclear']} are unclear (±1 std over seeds overlap, or n < 2)")
    if counts["holds"] == len(checks):
        return "reproduced", reason
    if counts["holds"] == 0 and counts["opposite"] > 0:
        return "not reproduced", reason
    return "inconclusive at this scale", reason


@dataclass
class Section:
    """One claim of the report: what the paper says, the tables, the figure and the verdict."""

    key: str  # the figure's file name
    title: str
    claim: str
    body: str
    figure: Figure | None
    checks: list[Check]
    note: str = ""
    missing: str = "the runs it needs are missing"  # the reason given when no comparison can be made

    @property
    def verdict(self) -> tuple[str, str]:
        return verdict(self.checks, self.missing)

    def part_verdicts(self) -> dict[str, tuple[str, str]]:
        """The verdict of each named part of the claim (empty for a claim of one part)."""
        parts = list(dict.fromkeys(c.part for c in self.checks if c.part))
        return {p: verdict([c for c in self.checks if c.part == p]) for p in parts} if len(parts) > 1 else {}


def final(r: RunResult) -> float:
    return r.final_fid


def _osc(key: str) -> Callable[[RunResult], float]:
    return lambda r: r.oscillation.get(key, math.nan)


def cell_table(sweep: Sweep, metric: Callable[[RunResult], float], methods: Sequence[str] = METHODS) -> str:
    return markdown_table(["method", *(cell_label(c) for c in sweep.cells)],
                          [[m, *(sweep.stat(metric, m, *c) for c in sweep.cells)] for m in methods])


def per_cell(sweep: Sweep, methods: Sequence[str], values: Callable[[str, int, int], list[float]]
             ) -> dict[str, list[Stat]]:
    """``{method: one Stat per main cell}`` of per-seed ``values(method, N, b)``."""
    return {m: [stat(values(m, *c)) for c in sweep.cells] for m in methods}


def oscillation(sweep: Sweep) -> Section:
    feat, grad = _osc("feat_level_mrc"), _osc("grad_mrc")
    depths = sorted({n for n, _ in sweep.cells})
    batches = sorted({b for _, b in sweep.cells})
    # the unscaled references the study ran, cell by cell (a study may drop uniform's cells for its budget: there
    # none alone is the reference)
    def ran(m: str, *cells: tuple[int, int]) -> bool:
        return m == "none" or all(sweep.runs(m, *c) for c in cells)

    checks = []
    for metric, name in ((feat, "feature"), (grad, "gradient")):
        for b in batches if len(depths) > 1 else []:
            for m in ("none", "uniform"):
                if ran(m, (depths[0], b), (depths[-1], b)):
                    checks.append(Check(f"{name} oscillation of {m}, b={b}: N={depths[0]} < N={depths[-1]}",
                                        sweep.stat(metric, m, depths[0], b), sweep.stat(metric, m, depths[-1], b),
                                        "<", f"{name} oscillation grows with N"))
        for b in batches:
            for m in SCALED:
                for ref in (r for r in ("none", "uniform") if ran(r, (depths[-1], b))):
                    checks.append(Check(f"{name} oscillation, N={depths[-1]}, b={b}: {m} < {ref}",
                                        sweep.stat(metric, m, depths[-1], b), sweep.stat(metric, ref, depths[-1], b),
                                        "<", f"{name} oscillation reduced by cs and ls"))
    body = ("Mean absolute relative change (mrc, docs/metrics.md) of the decoder-level feature energies F(h_i), "
            f"averaged over levels, steps ≥ twice the warm-up:\n\n{cell_table(sweep, feat)}\n\n"
            f"mrc of the per-block gradient norms, averaged over blocks, same steps:\n\n{cell_table(sweep, grad)}"
            "\n\nrstd (std/mean, which also grows with a steady drift) of the feature energies:\n\n"
            f"{cell_table(sweep, _osc('feat_level_rstd'))}\n\nrstd of the gradient norms:\n\n"
            f"{cell_table(sweep, _osc('grad_rstd'))}")
    fig = bar_panels(sweep.cells, [
        ("feature oscillation (mrc of F(h_i))", {m: [sweep.stat(feat, m, *c) for c in sweep.cells] for m in METHODS}),
        ("gradient oscillation (mrc of G_b)", {m: [sweep.stat(grad, m, *c) for c in sweep.cells] for m in METHODS})])
    return Section("oscillation", "Claim 1 — oscillation grows with the number of LSCs; cs and ls reduce it",
                   "Fig. 1, Thm 3.1/3.3: feature and gradient oscillation grow with the number of LSCs and are "
                   "reduced by cs and ls relative to none and uniform.", body, fig, checks)


def convergence(sweep: Sweep) -> Section:
    mid, end = SPEEDUP_AT
    checks = [Check(f"{m}, N={n}, b={b}: speed-up to none's half-way FID > {SPEEDUP_CLAIM}",
                    stat(sweep.speedups(m, n, b, mid)), SPEEDUP_CLAIM, ">", m)
              for n, b in sweep.cells for m in SCALED]
    header = ["method", *(cell_label(c) for c in sweep.cells)]
    tables = {at: markdown_table(header, [[m, *(stat(sweep.speedups(m, *c, at)) for c in sweep.cells)]
                                          for m in METHODS[1:]]) for at in SPEEDUP_AT}
    body = ("Speed-up = steps for `none` to reach a target FID / steps for the method to reach it, per seed (same "
            "seed = same data order, t and ε draws), on the FID curve logged during training (domain FID of 256 "
            "DPM-Solver++ 10-step samples of the EMA weights), the crossing interpolated linearly between "
            "measurements (`scalelong.eval.speedup`); 0 = never reached. The claim is tested with the target "
            f"`none`'s FID half-way through training:\n\n{tables[mid]}\n\nWith the target `none`'s final FID (under "
            "cosine decay every curve falls until the last step, so this one is mostly reached at the end or "
            f"never):\n\n{tables[end]}\n\nFinal FID (last measurement):\n\n" + cell_table(sweep, final))
    curves = {c: {m: [r.fid for r in sweep.runs(m, *c) if r.status == "completed" and r.fid is not None]
                  for m in METHODS} for c in sweep.cells}
    return Section("fid_curves", "Claim 2 — convergence speed", "Fig. 5: cs and ls reach the same FID in ≥ 1.5× "
                   "fewer steps than none, across batch sizes and depths.", body,
                   curve_panels(curves, "domain FID (256 samples)"), checks,
                   note="fid_curves.png: FID against steps (mean ± std over seeds); speedup.png: the speed-ups to "
                        "the half-way target.")


def speedup_figure(sweep: Sweep) -> Figure | None:
    half_way = per_cell(sweep, METHODS[1:], lambda m, n, b: sweep.speedups(m, n, b, SPEEDUP_AT[0]))
    return bar_panels(sweep.cells, [("speed-up over none (steps to none's half-way FID)", half_way)],
                      reference=SPEEDUP_CLAIM)


def batch_depth(sweep: Sweep) -> Section:
    depths = sorted({n for n, _ in sweep.cells})
    batches = sorted({b for _, b in sweep.cells})
    checks = []
    for m in SCALED:
        if len(batches) > 1:
            for n in depths:
                checks.append(Check(f"{m}, N={n}: gain at b={batches[0]} > gain at b={batches[-1]}",
                                    stat(sweep.fid_gains(m, n, batches[0])), stat(sweep.fid_gains(m, n, batches[-1])),
                                    ">", "larger gain at small batch"))
        if len(depths) > 1:
            for b in batches:
                checks.append(Check(f"{m}, b={b}: gain at N={depths[-1]} > gain at N={depths[0]}",
                                    stat(sweep.fid_gains(m, depths[-1], b)), stat(sweep.fid_gains(m, depths[0], b)),
                                    ">", "larger gain at large depth"))
    gains = per_cell(sweep, METHODS[1:], sweep.fid_gains)
    body = ("Gain = final FID of `none` / final FID of the method, paired by seed (> 1: the method is better). "
            "The speed-up of claim 2 is undefined when a target is never reached, so the size of the gain is "
            "compared on final FID.\n\n"
            + markdown_table(["method", *(cell_label(c) for c in sweep.cells)], [[m, *s] for m, s in gains.items()]))
    fig = bar_panels(sweep.cells, [("FID gain over none (final FID ratio)", gains)], reference=1.0)
    return Section("fid_gain", "Claim 3 — the gain is larger at small batch and large depth", "Fig. 6: the gain of "
                   "cs/ls is larger at small batch size and at large depth.", body, fig, checks)


def direction(sweep: Sweep) -> Section:
    # compared in the cells where cs_reversed ran (a study may drop some for its budget; they are named)
    run = [c for c in sweep.cells if sweep.runs("cs_reversed", *c)]
    dropped = [c for c in sweep.cells if c not in run]
    checks = [Check(f"N={n}, b={b}: FID of cs < FID of cs_reversed", sweep.stat(final, "cs", n, b),
                    sweep.stat(final, "cs_reversed", n, b), "<") for n, b in run]
    methods = ("none", "cs", "cs_reversed")
    body = (f"Final FID, κ = {sweep.study.kappa:g}: cs uses κ_i = κ^(i−1) (outermost skip 1), cs_reversed "
            "κ^(N−i+1).\n\n" + cell_table(sweep, final, methods))
    if run and dropped:
        body += ("\n\ncs_reversed was not run (dropped for the budget) at " + "; ".join(cell_label(c) for c in dropped)
                 + ": the claim is compared at " + "; ".join(cell_label(c) for c in run) + " only.")
    fig = bar_panels(sweep.cells, [("final FID", {m: [sweep.stat(final, m, *c) for c in sweep.cells]
                                                  for m in methods})])
    return Section("direction", "Claim 4 — direction of the scaling", "Table 4: κ_i = κ^(i−1) beats the reversed "
                   "order.", body, fig, checks)


def learned_kappa(sweep: Sweep) -> Section:
    fit, r2 = (lambda r: r.ls_fit.get("fit_kappa", math.nan)), (lambda r: r.ls_fit.get("fit_r2", math.nan))
    checks = [Check(f"N={n}, b={b}: fitted κ of ls < {LS_DECAY_BOUND} (a decay within the paper's κ range)",
                    sweep.stat(fit, "ls", n, b), LS_DECAY_BOUND, "<") for n, b in sweep.cells]
    rows, gates, fits = [], {}, {}
    for c in sweep.cells:
        runs = [r for r in sweep.runs("ls", *c) if r.kappas]
        rows.append([cell_label(c), sweep.stat(fit, "ls", *c), sweep.stat(r2, "ls", *c),
                     stat(r.kappas[-1] / r.kappas[0] for r in runs)])
        if runs:
            gates[c], fits[c] = np.array([r.kappas for r in runs]), stat(fit(r) for r in runs).mean
    body = ("The LS gate averaged over channels (conv UNet) or tokens (U-ViT) on 30 inputs x ~ N(0, I) at t = 100, "
            "500, 900 (Fig. 7 protocol, `callbacks.kappa`), at the end of training, fitted by a·κ^(i−1) in log space. "
            f"The claim holds in a cell when the fitted κ is below {LS_DECAY_BOUND}, the top of the paper's Sec. 4.1 "
            f"range [0.5, 0.95] (κ_N/κ_1 = {LS_DECAY_BOUND}^(N−1), 0.57 for N = 12):\n\n"
            + markdown_table(["cell", "fitted κ", "R² of the fit", "κ_N / κ_1"], rows))
    return Section("ls_kappa", "Claim 5 — LS learns a decaying κ", "Fig. 7: the coefficients LS learns decay with "
                   "i like κ^(i−1).", body, learned_kappa_panels(gates, fits, sweep.study.kappa), checks)


def amplified(sweep: Sweep) -> Section:
    kappas = sorted({s.kappa for s in sweep.groups if s.scaler == "cs" and s.kappa and s.kappa > 1})
    cells = sorted({s.cell for s in sweep.groups if s.scaler == "cs" and s.kappa in kappas})
    checks, rows, lines = [], [], {}
    for n, b in cells:
        none = sweep.stat(final, "none", n, b)
        amplified_stats = [sweep.stat(final, "cs", n, b, kappa=k) for k in kappas]
        rows.append([cell_label((n, b)), sweep.stat(final, "cs", n, b), none, *amplified_stats])
        lines[cell_label((n, b))] = ([sweep.study.kappa, 1.0, *kappas], rows[-1][1:])
        checks += [Check(f"N={n}, b={b}: FID of cs(κ={k:g}) > FID of none", s, none, ">", "κ > 1 degrades")
                   for k, s in zip(kappas, amplified_stats)]
    batches = sorted({b for _, b in cells})
    if len(batches) > 1:
        for n in sorted({n for n, _ in cells}):
            for k in kappas:
                def ratio(b: int, k: float = k, n: int = n) -> Stat:
                    return stat(r.final_fid / base.final_fid
                                for base, r in pairs(sweep.runs("none", n, b), sweep.runs("cs", n, b, kappa=k)))
                checks.append(Check(f"N={n}, cs(κ={k:g}): degradation (FID ratio to none) at b={batches[0]} > at "
                                    f"b={batches[-1]}", ratio(batches[0]), ratio(batches[-1]), ">",
                                    "degradation larger at small batch"))
    body = ("Final FID of cs with κ > 1 (κ_i = κ^(i−1) grows towards the inner skips) next to "
            f"cs(κ={sweep.study.kappa:g}) and none (κ = 1); a diverged run (non-finite loss) counts as FID = ∞ and is "
            "listed:\n\n"
            + markdown_table(["cell", f"cs(κ={sweep.study.kappa:g})", "none (κ=1)", *(f"cs(κ={k:g})" for k in kappas)],
                             rows))
    fig = stat_lines(lines, "κ (κ = 1: none)", "final FID")
    return Section("kappa_gt1", "Claim 6 — κ > 1 degrades training, most at small batch", "Fig. 13: amplifying the "
                   "skips (κ > 1) degrades training, collapsing at small batch.", body, fig, checks)


def frontier(sweep: Sweep) -> Section:
    """The stability frontier: per cell with several lrs and per scaler, the largest lr at which it *trains* (no seed
    diverged and mean final FID within 10% of its best lr's); the claim: above none's frontier, cs and ls still
    train better than none."""
    lr_cells = [c for c in sorted({s.cell for s in sweep.groups}) if len(sweep.lrs(c)) > 1]
    checks, parts, panels, summary = [], [], {}, []
    for cell in lr_cells:
        lrs = sweep.lrs(cell)
        methods = [m for m in METHODS if sum(1 for lr in lrs if sweep.runs(m, *cell, lr=lr)) > 1]
        fids = {m: [sweep.stat(final, m, *cell, lr=lr) for lr in lrs] for m in methods}
        spikes = {m: [sweep.stat(lambda r: r.spikes, m, *cell, lr=lr) for lr in lrs] for m in methods}
        largest = {m: trains_up_to(lrs, fids[m]) for m in methods}
        panels[cell] = {m: (lrs, fids[m]) for m in methods}
        summary.append(f"{cell_label(cell)}: " + ", ".join(f"{m} {largest[m]:g}" for m in methods))
        header = ["method", *(f"lr {lr:g}" for lr in lrs)]
        lost = {m: [failed_seeds(sweep.runs(m, *cell, lr=lr), fids[m]) for lr in lrs] for m in methods}
        parts += [f"### {cell_label(cell)}", "", "Final FID (a diverged seed is counted, not averaged):", "",
                  markdown_table([*header, "frontier"], [[m, *fids[m], f"{largest[m]:g}"] for m in methods]), "",
                  bracket(lrs, fids), "",
                  f"Seeds that failed (diverged, or collapsed: a final FID {COLLAPSE_RATIO:g}× the method's best mean "
                  "over the grid or more) of the seeds run:", "",
                  markdown_table(header, [[m, *(f"{k}/{n}" if n else "–" for k, n in lost[m])] for m in methods]),
                  "", "Loss spikes per run (`loss/spikes`: steps whose loss exceeded 2× the median of the previous "
                  "100):", "", markdown_table(header, [[m, *spikes[m]] for m in methods]), ""]
        if "none" in methods:
            everyone_fails = [not any(ok) for ok in zip(*(trains(f) for f in fids.values()))]
            for i, (lr, none) in enumerate(zip(lrs, fids["none"])):
                if (lr > largest["none"] or math.isnan(largest["none"])) and not everyone_fails[i]:
                    checks += [Check(f"{cell_label(cell)}, lr {lr:g} (none fails): FID of {m} < FID of none",
                                     fids[m][i], none, "<", m) for m in SCALED if m in methods]
            scaled = [m for m in SCALED if m in methods]
            if scaled and not math.isnan(largest["none"]):
                where = [i for i, lr in enumerate(lrs) if lr <= largest["none"]]  # the lrs where none trains
                counts = {m: [sum(lost[m][i][k] for i in where) for k in (0, 1)] for m in scaled}
                parts += [f"At the lrs where none trains (≤ {largest['none']:g}), seeds lost: "
                          + ", ".join(f"{m} {k}/{n}" for m, (k, n) in counts.items())
                          + " (not part of the claim's comparisons).", ""]
    body = (f"A scaler *trains* at an lr when no seed diverged and its mean final FID is within "
            f"{FRONTIER_TOLERANCE:.0%} of its best lr's; its frontier is the largest such lr of the grid. The claim is "
            "tested at every lr of the grid above none's frontier where some method still trains: there, cs and ls "
            "should reach a lower FID than none. An lr where every method fails only shows that the grid reaches "
            "past the frontier; no scaler can win there, so it is not a comparison.\n\n" + "\n".join(parts)
            ) if lr_cells else "No run at another learning rate."
    return Section("frontier", "Stability frontier — cs and ls train where none fails", "Sec. 1 and Fig. 1: scaling "
                   "the LSCs stabilises training, so cs and ls should keep training at learning rates where none "
                   "already fails.", body, frontier_panels(panels), checks, note="; ".join(summary),
                   missing="no lr of the grid where none fails and another method still trains (or the grid was "
                           "not run), so there is no lr at which to compare")


def best_mean(fids: Sequence[Stat]) -> float:
    """The lowest mean final FID of a method over the lr grid (NaN when no lr has a value)."""
    return min((s.mean for s in fids if s.n), default=math.nan)


def trains(fids: Sequence[Stat]) -> list[bool]:
    """Per lr of the grid: no seed diverged and the mean FID is within FRONTIER_TOLERANCE of the best lr's."""
    best = best_mean(fids)
    return [bool(s.n) and not s.diverged and s.mean <= (1 + FRONTIER_TOLERANCE) * best for s in fids]


def failed_seeds(runs: Sequence[RunResult], fids: Sequence[Stat]) -> tuple[int, int]:
    """(failed, run) seeds of one method at one lr: a seed fails when it diverged or collapsed (a final FID
    COLLAPSE_RATIO times the method's best mean final FID over the grid, ``fids``, or more)."""
    ended = [r for r in runs if r.status in ENDED]
    return sum(not r.final_fid < COLLAPSE_RATIO * best_mean(fids) for r in ended), len(ended)


def trains_up_to(lrs: Sequence[float], fids: Sequence[Stat]) -> float:
    """The largest lr of the grid at which the method trains (NaN if none)."""
    return max((lr for lr, ok in zip(lrs, trains(fids)) if ok), default=math.nan)


def bracket(lrs: Sequence[float], fids: dict[str, Sequence[Stat]]) -> str:
    """Whether the grid spans the frontier as the claim needs: an lr where every method trains and one where every
    method fails."""
    ok = {m: trains(f) for m, f in fids.items()}
    every = [lr for i, lr in enumerate(lrs) if all(ok[m][i] for m in ok)]
    none_of = [lr for i, lr in enumerate(lrs) if not any(ok[m][i] for m in ok)]
    every_text, none_text = (", ".join(f"{lr:g}" for lr in chosen) for chosen in (every, none_of))
    return ((f"Every method trains at lr {every_text}" if every else "No lr of the grid where every method trains")
            + "; " + (f"every method fails at lr {none_text}." if none_of else
                      "no lr where every method fails (the grid stops before the last method fails)."))


CLAIMS = (oscillation, convergence, batch_depth, direction, learned_kappa, amplified, frontier)


def sections(sweep: Sweep) -> list[Section]:
    """Every claim of the report, in order (the six claims, then the stability frontier)."""
    return [claim(sweep) for claim in CLAIMS]

