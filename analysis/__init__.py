"""Scaling-law analysis for slm-scaling: fits, allocation, reference laws, reports.

Modules: fit_lnd (Approach 3, L(N, D) with bootstrap), allocation (compute-optimal N, D),
isoflop (Approach 2), envelope (Approach 1), compute_laws (L(C), Q(C) on the frontier),
reference (published laws), fitcsv (CSV entry point), harvest (run directories -> DataFrame),
report (figures + report.md), errors (typed refusals).
Pure numpy/scipy/pandas/matplotlib; never imports torch, transformers, scaling/ or sweeps/.
"""
