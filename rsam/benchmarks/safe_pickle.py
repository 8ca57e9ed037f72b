"""A restricted unpickler for untrusted refs pickles (RRSIS-D ``refs(unc).p`` and alike).

Only plain containers and scalars may be built: dict, list, tuple, set, frozenset, str, bytes, int, float, bool,
None (plus the ``copyreg``/``builtins`` constructors those protocol opcodes need). Any other global — a class, a
function, ``os.system`` — raises :class:`UnsafePickleError` before anything is called, so a hostile file cannot run
code. (``pickle.load`` would import and call whatever the file names.)
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

_ALLOWED_GLOBALS = {
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "str"),
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "bool"),
    ("builtins", "complex"),
    ("__builtin__", "dict"),
    ("__builtin__", "list"),
    ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
    ("__builtin__", "unicode"),
    ("__builtin__", "str"),
    ("__builtin__", "int"),
    ("__builtin__", "long"),
    ("__builtin__", "float"),
    ("__builtin__", "bool"),
    ("_codecs", "encode"),
}


class UnsafePickleError(ValueError):
    """The pickle names a global outside the allow-list."""


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(f"pickle refers to {module}.{name}, which is not a plain container; refusing it")
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise UnsafePickleError("pickle uses persistent ids; refusing it")


def safe_load_pickle(path: str | Path):
    """Load a pickle holding plain containers only (Python 2 pickles decoded as latin-1 text)."""
    data = Path(path).read_bytes()
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError:
        raise
    except Exception as err:  # truncated / garbled files: one clear message naming the file
        raise ValueError(f"cannot read pickle {path}: {err}") from err
