"""The job model and its store: specs, the method registry, status and transitions, the one status
writer, inputs, the model registry."""
