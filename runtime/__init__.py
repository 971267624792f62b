"""Torch-free runtime: load a ``kiln export`` folder and run it with HF-named numpy inputs and outputs.

    from tensorkiln.runtime import load
    session = load("exports/pythia")
    logits = session.run(input_ids=ids)["logits"]

This package is the base of the stack (numpy + onnxruntime only): it owns the export contract (the manifest, file
hashing, atomic writes, the custom-node contract), the tolerance policy, the error types, sessions, generation and
Triton output. It never imports ``tensorkiln.reference`` or ``tensorkiln.export``.
"""

from .errors import BackendUnavailableError, KilnError, ManifestError, RuntimeInputError
from .session import Session, load
from .version import package_version

__version__ = package_version()

__all__ = ["BackendUnavailableError", "KilnError", "ManifestError", "RuntimeInputError", "Session", "__version__",
           "load"]
