"""The networks: VGG19, the conditional-instance-norm transformer, the ONNX import of multistyle26."""
