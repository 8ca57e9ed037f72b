"""The process's memory allocator: rsam's commands run on jemalloc where it is installed.

Why: a training step of the official configuration on CPU allocates and frees tens of GB of activation-sized
tensors (50-130 MB each at 896²). glibc's malloc serves every block above 32 MB with a fresh ``mmap`` and returns it
with ``munmap`` on free, so the kernel zero-fills every page again on each step: measured here at batch 2, 29 % of
the process's CPU time was system time (36 M page faults in 4 steps), and the step took 87-100 s. jemalloc keeps
freed pages for reuse (decay off, ``MALLOC_CONF`` below): the same step took 59-61 s, at a peak RSS of 10.9 GB
instead of 11.7 GB. PyTorch's CPU performance guide recommends jemalloc or TCMalloc for the same reason
(``torch.backends.xeon.run_cpu`` preloads them); glibc's own tunables (``mmap_max=0``) were as fast but raised the
peak RSS by a quarter through fragmentation. On GPUs the tensors live in CUDA's caching allocator and this matters
only for the host side (data loading).

A process cannot change its allocator once started, so :func:`relaunch_on_jemalloc` re-executes the same command
line (same pid, so Slurm's signals and the job's accounting are unaffected) with ``LD_PRELOAD``. The ``rsam``
entry point calls it first thing; the processes Lightning launches for more ranks inherit the environment.

``RSAM_MALLOC``: ``auto`` (default: jemalloc if found, else the system allocator), ``jemalloc`` (an error if not
found), ``system`` (never relaunch), or the path of a ``libjemalloc.so``. jemalloc is found through the dynamic
linker's cache (Debian/Ubuntu: ``apt install libjemalloc2``) or in ``$CONDA_PREFIX/lib`` / the environment's
``lib`` (``conda install jemalloc``). A ``MALLOC_CONF`` already set is kept.

:func:`set_decay` changes the setting while the process runs (jemalloc's ``mallctl``): a fit with activation
checkpointing on a CPU, where memory comes first, has freed pages returned to the OS after a second unused.

Library users (``import rsam`` in their own process) choose their allocator themselves, e.g.
``LD_PRELOAD=libjemalloc.so.2 MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1 python script.py``.
"""

from __future__ import annotations

import ctypes.util
import errno
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

SETTING = "RSAM_MALLOC"
# freed pages are kept for reuse (no decay back to the OS): the process's RSS stays at its peak, which a training
# or inference process reaches again on every step anyway
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
_RELAUNCHED = "RSAM_MALLOC_RELAUNCHED"  # set in the relaunched process: never exec twice


# with activation checkpointing (memory first): freed pages go back to the OS after a second unused
CHECKPOINTING_DECAY_MS = 1000


def set_decay(ms: int) -> bool:
    """Have jemalloc return freed pages to the OS once they stayed unused for ``ms`` milliseconds (-1: never, the
    setting rsam starts with; 0: at once), for every arena now and later; the pages go straight back
    (``dirty_decay_ms``), none is parked as lazily freed (``muzzy_decay_ms`` 0), so the RSS falls with them.

    Returns False, changing nothing, where the process does not run on jemalloc or the user set ``MALLOC_CONF``
    to something other than rsam's setting (theirs is kept)."""
    if active() != "jemalloc" or os.environ.get("MALLOC_CONF", JEMALLOC_CONF) != JEMALLOC_CONF:
        return False
    mallctl = ctypes.CDLL(None).mallctl
    mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    count, size = ctypes.c_uint(0), ctypes.c_size_t(ctypes.sizeof(ctypes.c_uint))
    if mallctl(b"arenas.narenas", ctypes.byref(count), ctypes.byref(size), None, 0):
        raise OSError("jemalloc mallctl arenas.narenas failed")
    for name, value in (("dirty_decay_ms", ms), ("muzzy_decay_ms", 0)):
        setting = ctypes.c_ssize_t(value)
        # the default for arenas made later, then each arena now in use (EFAULT: an empty arena slot)
        for key, empty_slot_ok in (
            (f"arenas.{name}", False),
            *((f"arena.{i}.{name}", True) for i in range(count.value)),
        ):
            code = mallctl(key.encode(), None, None, ctypes.byref(setting), ctypes.sizeof(setting))
            if code and not (empty_slot_ok and code == errno.EFAULT):
                raise OSError(code, f"jemalloc mallctl {key} = {value} failed: {os.strerror(code)}")
    log.info("allocator: freed pages go back to the OS after %d ms unused", ms)
    return True


def find_jemalloc() -> str | None:
    """The jemalloc shared library to preload: a path in a conda/virtual environment, else the soname the dynamic
    linker's cache knows (``libjemalloc.so.2``), else None."""
    for prefix in filter(None, (os.environ.get("CONDA_PREFIX"), sys.prefix)):
        for name in ("libjemalloc.so.2", "libjemalloc.so"):
            if (Path(prefix) / "lib" / name).is_file():
                return str(Path(prefix) / "lib" / name)
    return ctypes.util.find_library("jemalloc")


def active() -> str:
    """``"jemalloc"`` where this process runs on jemalloc (it is mapped), else ``"system"``."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return "jemalloc" if "libjemalloc" in maps else "system"


def wanted_library(setting: str) -> str | None:
    """The library ``RSAM_MALLOC=setting`` asks for, or None for the system allocator.

    Raises:
        ValueError: the setting is not one of ``auto``, ``jemalloc``, ``system`` or an existing file.
        FileNotFoundError: ``jemalloc`` was asked for and is not installed.
    """
    if setting == "system":
        return None
    if setting in ("auto", "jemalloc"):
        library = find_jemalloc()
        if library is None and setting == "jemalloc":
            raise FileNotFoundError(
                f"{SETTING}=jemalloc: no libjemalloc found (apt install libjemalloc2, or conda install jemalloc; "
                f"{SETTING}=system runs on the system allocator)"
            )
        return library
    if Path(setting).is_file():
        return setting
    raise ValueError(f"{SETTING}={setting!r}: expected auto, jemalloc, system or the path of a libjemalloc.so")


def relaunch_on_jemalloc() -> None:
    """Re-execute this process's command line on jemalloc where ``RSAM_MALLOC`` asks for it and it is not active.

    Returns without doing anything on non-Linux systems, when jemalloc already runs (preloaded by the caller or an
    earlier relaunch), when none is installed under ``auto``, and in a relaunched process whose preload failed (the
    dynamic linker then says why on stderr). Call it before anything allocates much: nothing runs after it in the
    replaced process.
    """
    if not sys.platform.startswith("linux") or os.environ.get(_RELAUNCHED) or active() == "jemalloc":
        return
    library = wanted_library(os.environ.get(SETTING, "auto"))
    if library is None:
        log.debug("%s: running on the system allocator", SETTING)
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(filter(None, (library, env.get("LD_PRELOAD"))))
    env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    env[_RELAUNCHED] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
