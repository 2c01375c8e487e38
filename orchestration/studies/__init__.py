"""Research studies on the toy world: the miniature Table 1, recipes across training seeds,
judge breakdowns, LRM-expert agreement and the human preference study (human/). Each runs as
`python -m orchestration.studies.<name>`."""
