"""Host-side conversion: checkpoint -> verified ONNX graphs -> INT8 -> engines. Needs torch."""
