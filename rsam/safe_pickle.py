"""The one restricted unpickler for untrusted pickles (refs files of RRSIS-D-style datasets: ``refs(unc).p``).

Used by the data engine (``rsam data from-refer``, :mod:`rsam.data.refer`) and by the benchmark reader
(:mod:`rsam.evaluation.readers.rrsisd`). Only plain containers and scalars may be built: dict, list, tuple, set,
frozenset, str, bytes, bytearray, int, float, complex, bool, None — plus the ``builtins``/``__builtin__``
constructors and ``_codecs.encode`` that the older pickle protocols (Python 2 files, protocol <= 2 bytes) name for
them. Any other global — a class, a function, ``os.system`` — raises :class:`UnsafePickleError` before anything is
called, so a hostile file cannot run code (``pickle.load`` would import and call whatever the file names).
Python 2 byte strings are decoded as UTF-8 (ASCII, the official files' content, is the same in every encoding).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

_PLAIN = ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float", "complex", "bool")
_ALLOWED_GLOBALS = frozenset(
    {("builtins", name) for name in _PLAIN}
    | {("__builtin__", name) for name in (*_PLAIN, "unicode", "long")}
    | {("_codecs", "encode")}
)


class UnsafePickleError(ValueError):
    """The pickle names a global outside the allow-list (or uses persistent ids)."""


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: only plain lists/dicts/strings/numbers may be unpickled"
            )
        if module == "__builtin__":
            module, name = "builtins", {"unicode": "str", "long": "int"}.get(name, name)
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise UnsafePickleError("the pickle uses persistent ids; refusing it")


def safe_load_pickle(path: str | Path):
    """Load a pickle holding plain containers only; one ``ValueError`` naming the file for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pickle not found: {path}")
    data = path.read_bytes()
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="utf-8").load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path}: {err}") from None
    except Exception as err:  # truncated / garbled files: one clear message naming the file
        raise ValueError(f"cannot read pickle {path}: {err}") from err
