"""Training loops for the networks that ``fast`` and ``adain`` use, with their data pipeline and plots."""
