"""Machine learning on the lake: labels, point-in-time features (batch and online from one definition), the online feature store, the fraud trainer and the registry rules."""
