"""Scoring one picture: the metric registry, the prompt language parsed into expectations,
one check per expectation, the `grid/*` fidelity and `palette/*` metrics, feature regions
and memorisation. Arrays and plain values in, numbers out."""
