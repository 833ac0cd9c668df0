"""Published scaling laws, as data, for comparison plots and sanity checks.

Sources (see the project's paper fact sheet): Hoffmann et al. 2022 (Chinchilla, Approach 3,
rounded published values); Besiroglu et al. 2024 (Epoch AI replication); Cuervo & Marxer 2024
(textless speech LM, HuBERT 25 Hz units, Table 5); Maimon et al. 2025 (SIMS) Figure 1
legend, which also re-plots Cuervo & Marxer's textless and Pythia text curves.
Caveat: each paper counts parameters (and hence FLOPs) and losses differently, so absolute
values are not comparable across rows; exponents are the portable part.
A law holds only where it was fitted: each carries its compute range (``flops_range``), and
``drawable_spans`` says which part of a plot may show it (solid inside the range, dashed up to a
decade outside, nothing beyond).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LossLaw:
    """A published L(N, D) = E + A/N**alpha + B/D**beta."""

    name: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str
    n_convention: str
    flops_range: tuple | None = None  # compute (FLOPs) of the runs it was fitted on, where known

    def predict(self, N, D):
        """Predicted loss."""
        return self.E + self.A / np.asarray(N, float) ** self.alpha + self.B / np.asarray(D, float) ** self.beta

    @property
    def a(self) -> float:
        """N_opt exponent beta/(alpha+beta)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """D_opt exponent alpha/(alpha+beta)."""
        return self.alpha / (self.alpha + self.beta)


@dataclass(frozen=True)
class MetricLaw:
    """A published downstream law Q(C) = k C**gamma (Q an accuracy in [0, 1], C in FLOPs)."""

    name: str
    metric: str
    setup: str
    k: float
    gamma: float
    source: str
    flops_range: tuple = (2e18, 7e20)  # the compute SIMS Fig. 1 plots its fitted points over

    def predict(self, flops):
        """Predicted accuracy (no saturation)."""
        return self.k * np.asarray(flops, float) ** self.gamma


CHINCHILLA = LossLaw("chinchilla", E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28,
                     source="Hoffmann et al. 2022, Approach 3 (rounded)", n_convention="total incl. embeddings")
EPOCH = LossLaw("epoch", E=1.817, A=482.01, B=2085.43, alpha=0.348, beta=0.366,
                source="Besiroglu et al. 2024 (Epoch AI replication of Chinchilla)", n_convention="total incl. embeddings")
CUERVO_MARXER_SPEECH = LossLaw("cuervo_marxer_speech", E=1.73, A=13.9, B=39.8, alpha=0.25, beta=0.24,
                               source="Cuervo & Marxer 2024, Table 5 (HuBERT units)",
                               n_convention="speech-only vocabulary",
                               # approximate: the compute over which SIMS Fig. 1 re-plots their models
                               flops_range=(2e18, 7e20))

LOSS_LAWS = {law.name: law for law in (CHINCHILLA, EPOCH, CUERVO_MARXER_SPEECH)}

_SIMS_FIG1 = "Maimon et al. 2025 (SIMS), Figure 1 legend"
SIMS_FIGURE1 = (
    MetricLaw("sims_interleaved_ssc", "ssc", "interleaved", 0.19, 0.026, _SIMS_FIG1),
    MetricLaw("sims_interleaved_tsc", "tsc", "interleaved", 0.37, 0.018, _SIMS_FIG1),
    MetricLaw("textless_ssc", "ssc", "textless", 0.26, 0.017, _SIMS_FIG1 + " (Cuervo & Marxer 2024)"),
    MetricLaw("textless_tsc", "tsc", "textless", 0.24, 0.025, _SIMS_FIG1 + " (Cuervo & Marxer 2024)"),
    MetricLaw("text_pythia_ssc", "ssc", "text", 0.07, 0.046, _SIMS_FIG1 + " (Pythia via Cuervo & Marxer)"),
    MetricLaw("text_pythia_tsc", "tsc", "text", 0.15, 0.039, _SIMS_FIG1 + " (Pythia via Cuervo & Marxer)"),
)
METRIC_LAWS = {law.name: law for law in SIMS_FIGURE1}


EXTRAPOLATE_DECADES = 1.0  # how far outside its fitted range a law may be drawn (dashed)


def drawable_spans(flops_range, plot_lo: float, plot_hi: float) -> dict | None:
    """Where a law fitted on ``flops_range`` may be drawn on a plot spanning [plot_lo, plot_hi]:
    {"fitted": (lo, hi) or None (solid), "extrapolated": [(lo, hi), ...] (dashed, at most a decade
    outside the range)}, or None when the plot is more than a decade from the range (then the law is
    listed in a table, not drawn). A law without a known range is never drawn."""
    if not flops_range:
        return None
    r_lo, r_hi = flops_range
    f = 10.0 ** EXTRAPOLATE_DECADES

    def span(a, b):
        a, b = max(a, plot_lo), min(b, plot_hi)
        return (a, b) if a < b else None

    fitted = span(r_lo, r_hi)
    extrapolated = [s for s in (span(r_lo / f, r_lo), span(r_hi, r_hi * f)) if s]
    return {"fitted": fitted, "extrapolated": extrapolated} if fitted or extrapolated else None


def figure1_metric(name: str) -> str:
    """The Figure-1 metric a benchmark name measures: 'ssc' / 'tsc', or their spoken form 'ssc_ss' /
    'tsc_ss' (spoken prompt and endings, what SIMS's Figure 1 plots); other names as they are."""
    name = name.lower()
    return name[:-3] if name in ("ssc_ss", "tsc_ss") else name


def metric_laws_for(metric: str) -> list[MetricLaw]:
    """Published Figure-1 laws for one metric ('ssc' or 'tsc', or 'ssc_ss' / 'tsc_ss')."""
    return [law for law in SIMS_FIGURE1 if law.metric == figure1_metric(metric)]
