"""Audio CNN under study: log-mel front-end, datasets, VGG-style model, training."""
