"""Size limits on what a user's input may ask for, checked before anything is read into memory or allocated.

Each limit is far above what a real DenseNAS run needs (docs/reliability.md lists them); the two a real user
could outgrow (input file size, model size) can be raised through the environment.
"""

from __future__ import annotations

import os

from densenas.errors import DensenasError

MAX_NESTING = 64            # levels of lists/mappings in a YAML or JSON input (params nest 5 deep)
MAX_VALUES = 1_000_000      # values a YAML/JSON input may expand to, aliases counted at every use
MAX_INPUT_SIZE = 4096       # pixels of an input side (`info`, `zoo`, `lut --input-size`)
MAX_CLASSES = 100_000       # classifier outputs (`info`, `lut --num-classes`, net_config num_classes)
MAX_BATCH = 65_536          # `lut --batch`


def max_input_bytes() -> int:
    """YAML/JSON input files above this are refused unread (env DENSENAS_MAX_INPUT_MB, default 32)."""
    return _env_number("DENSENAS_MAX_INPUT_MB", 32) * 2**20


def max_model_params() -> int:
    """A net_config whose estimated weights exceed this is refused before the model is built (env
    DENSENAS_MAX_MODEL_PARAMS_M, default 1000 million: 4 GB of float32 weights; DenseNAS models have 3 to 30 M)."""
    return _env_number("DENSENAS_MAX_MODEL_PARAMS_M", 1000) * 10**6


def _env_number(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    if not value.isdigit() or int(value) < 1:
        raise DensenasError(f"environment {name}={value!r}: expected a positive whole number")
    return int(value)
