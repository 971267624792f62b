"""Torch-free runtime."""
