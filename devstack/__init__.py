"""Development tools: a local moto server, synthetic sample frames, and the demo."""
