"""Placeholder: the ONNX translation of the custom ops (MraAttention, MegaEma) lands here."""

TRANSLATION_TABLE: dict = {}
