"""Scaling-law analysis for slm-scaling: fits, allocation, reference laws, reports.

Maths: fit_lnd (Approach 3, L(N, D) with bootstrap), allocation (compute-optimal N, D),
isoflop (Approach 2), envelope (Approach 1), compute_laws (L(C), Q(C) on the frontier),
extrapolation (hold out the largest budget), recommendation (what to train at a budget),
reference (published laws). Data: harvest (run directories -> DataFrame), mlflow_io (an
MLflow experiment -> the same DataFrame; report runs), fitcsv (CSV entry point).
Reports: study_fits (every fit per group, fits.json), figures (the six PNGs), document
(markdown/HTML rendering), report (write_report). commands: what launch.py calls.
errors: typed refusals. Pure numpy/scipy/pandas/matplotlib (mlflow lazily); never imports
torch, transformers, scaling/ or sweeps/.
"""
