"""Contracts every package shares, torch-free and light: the run directory (its one owner) and
advisory file locks. `scaling/`, `sweeps/` and `analysis/` may import it; it imports none of them."""
