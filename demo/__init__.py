"""The embedded micro replication (`launch.py demo`): generated stories, an offline speech corpus, evaluation
sets, a micro TextLM family and the stage cache that runs them through the library's public functions. The
library (common, scaling, sweeps, analysis) never imports this package."""
