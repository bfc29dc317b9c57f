"""The calling thread's floating-point environment (on x86 the MXCSR: flush-to-zero, denormals-are-zero), kept as the
user had it around OpenVINO. Its CPU plugin, compiling with CPU_DENORMALS_OPTIMIZATION, sets FTZ/DAZ on the thread
that compiles and leaves them set: every later float computation of that thread (the user's numpy included) would
silently flush subnormals to zero. onnxruntime's set_denormal_as_zero leaves the caller's thread as it was.

Saved and restored with C's fegetenv/fesetenv (ctypes; a thread's own state, so thread-safe); where no C maths
library offers them, nothing is kept (`available()` says so)."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterator
from contextlib import contextmanager

_ENV_BYTES = 256  # more than any C library's fenv_t (x86-64 glibc: 32 bytes, aarch64: 8)


def _load_libm():
    """The process's own symbols first (Python links the C maths library: no search on disk), then libm by name
    (glibc's libc has no fegetenv)."""
    for find in (lambda: None, lambda: ctypes.util.find_library("m")):
        try:
            library = ctypes.CDLL(find())
        except (OSError, TypeError):  # TypeError: CDLL(None) where the platform has no process-wide namespace
            continue
        if hasattr(library, "fegetenv") and hasattr(library, "fesetenv"):
            return library
    return None


_LIBM = _load_libm()


def available() -> bool:
    """Whether this platform's C library lets the environment be saved and restored."""
    return _LIBM is not None


def current() -> ctypes.Array | None:
    """This thread's floating-point environment, or None where it cannot be read."""
    if _LIBM is None:
        return None
    env = ctypes.create_string_buffer(_ENV_BYTES)
    return env if _LIBM.fegetenv(env) == 0 else None


def restore(env: ctypes.Array | None) -> None:
    """Set this thread's floating-point environment to `env` (a `current()`); None does nothing."""
    if env is not None and _LIBM is not None:
        _LIBM.fesetenv(env)


@contextmanager
def kept() -> Iterator[None]:
    """This thread's floating-point environment as it was on entry, whatever the block sets."""
    saved = current()
    try:
        yield
    finally:
        restore(saved)


@contextmanager
def running_with(env: ctypes.Array | None) -> Iterator[None]:
    """The block runs with `env` (the flush mode a kernel was compiled for), the caller's environment after it."""
    saved = current()
    if saved is None:  # what could not be saved is not changed
        yield
        return
    restore(env)
    try:
        yield
    finally:
        restore(saved)
