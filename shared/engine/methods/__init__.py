"""One module per stylization method, each with one entry point ``run(spec, ctx)``."""
