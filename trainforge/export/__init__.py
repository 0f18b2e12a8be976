"""Export for sharing and deployment: safetensors weights (``weights``) and ONNX models verified with
onnxruntime (``onnx``). onnx and onnxruntime load only when an ONNX function is called."""

from __future__ import annotations

from .onnx import OnnxExport, export_onnx, onnx_io_names, verify_onnx
from .weights import MAX_HEADER_BYTES, export_safetensors, load_safetensors

__all__ = [
    "MAX_HEADER_BYTES",
    "OnnxExport",
    "export_onnx",
    "export_safetensors",
    "load_safetensors",
    "onnx_io_names",
    "verify_onnx",
]
