"""Everything one interleaved speech-text LM training run needs: model families, parameter and FLOP
counts, vocabulary extension, data, the training loop, evaluation and the run directory."""
