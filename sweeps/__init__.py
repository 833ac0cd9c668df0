"""Study files, grids of cells (model size x token budget, IsoFLOP), cell keys, cost estimates and
dispatch."""
