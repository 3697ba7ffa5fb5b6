"""Classification: ONNX models (open_nsfw, NudeNet, generic) behind one adapter interface."""
