"""ONNX export of the inference graphs and an onnxruntime backend for `TTS` (see export.py, runtime.py)."""
