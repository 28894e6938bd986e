"""Many runs of one config: ``sweep`` expands a grid of overrides into runs."""
