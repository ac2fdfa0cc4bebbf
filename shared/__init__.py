"""Code shared by the API, the workers and the CLI: specs, settings, errors, SQL, storage, engine."""
