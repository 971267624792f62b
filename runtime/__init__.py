"""Torch-free runtime: load a ``kiln export`` folder and run it with HF-named numpy inputs and outputs.

    from tensorkiln.runtime import load
    session = load("exports/pythia")
    logits = session.run(input_ids=ids)["logits"]
"""

from .backends import BackendUnavailableError
from .inputs import RuntimeInputError
from .session import Session, load

__all__ = ["BackendUnavailableError", "RuntimeInputError", "Session", "load"]
