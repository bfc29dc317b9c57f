"""The calling thread's floating-point environment (on x86 the MXCSR: flush-to-zero, denormals-are-zero), kept as the
user had it around both engines, and flushing only inside the runs that ask for it.

Both engines change the thread that loads them, for good: OpenVINO's CPU plugin, compiling with
CPU_DENORMALS_OPTIMIZATION, sets FTZ/DAZ on the compiling thread; onnxruntime sets (`session.set_denormal_as_zero`
"1") or clears ("0", the default) them on the thread that creates the process's first session (a `std::call_once`
in `InferenceSession`), and threads started later from it inherit that mode. Either way the user's own numpy would
silently flush subnormals to zero, or stop flushing where the user had asked for it. Conversely, onnxruntime flushes
only its pool threads in later sessions, so the calling thread's share of a run (all of it with `threads=1`) would
meet the subnormal slowdown on CPUs that have one.

Saved and restored with C's fegetenv/fesetenv (ctypes; a thread's own state, so thread-safe); where no C maths
library offers them, nothing is kept (`available()` says so). Flushing inside a run sets the MXCSR's FTZ and DAZ bits
in a copy of the thread's environment: x86-64 Linux only (glibc and musl: the MXCSR is the fenv_t's last 4 of 32
bytes), checked once by its effect; elsewhere `can_flush()` is False and runs keep the caller's mode."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
import struct
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

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


def running_with(env: ctypes.Array | None) -> AbstractContextManager[None]:
    """The block runs with `env` (the flush mode a kernel was compiled for; None: the caller's), the caller's
    environment after it."""
    return _switched(current(), env)


@contextmanager
def _switched(saved: ctypes.Array | None, env: ctypes.Array | None) -> Iterator[None]:
    """The block runs with `env`, then `saved` (the thread's environment on entry); where nothing could be saved,
    nothing is changed."""
    if saved is None:
        yield
        return
    restore(env)
    try:
        yield
    finally:
        restore(saved)


_MXCSR_OFFSET = 28  # x86-64 Linux fenv_t (glibc, musl): x87 environment (28 bytes), then the MXCSR
_FLUSH_BITS = 0x8040  # MXCSR bit 15: flush-to-zero; bit 6: denormals-are-zero
_TINY, _ONE = 1e-310, 1.0  # module globals: a product of them is computed when asked, never folded at compile time


def _subnormals_flushed_here() -> bool:
    return _TINY * _ONE == 0.0


def _with_flush_bits(env: ctypes.Array, on: bool) -> ctypes.Array:
    """A copy of `env` with FTZ and DAZ set (`on`) or cleared."""
    copy = ctypes.create_string_buffer(env.raw, len(env))
    (mxcsr,) = struct.unpack_from("<I", copy, _MXCSR_OFFSET)
    struct.pack_into("<I", copy, _MXCSR_OFFSET, mxcsr | _FLUSH_BITS if on else mxcsr & ~_FLUSH_BITS)
    return copy


@functools.cache
def can_flush() -> bool:
    """Whether this platform's environment layout is known and its FTZ/DAZ bits decide flushing: checked once, by
    their effect both ways on this thread, which is left as it was."""
    if _LIBM is None or sys.platform != "linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    saved = current()
    if saved is None:
        return False
    (mxcsr,) = struct.unpack_from("<I", saved, _MXCSR_OFFSET)
    if mxcsr >> 16:  # the MXCSR's upper half is reserved (zero): this is not one
        return False
    try:
        restore(_with_flush_bits(saved, on=False))
        kept_subnormals = not _subnormals_flushed_here()
        restore(_with_flush_bits(saved, on=True))
        flushed = _subnormals_flushed_here()
    finally:
        restore(saved)
    return kept_subnormals and flushed


def subnormals_flushed() -> AbstractContextManager[None]:
    """The block computes with FTZ/DAZ set on this thread (what onnxruntime's pool threads run with under
    `set_denormal_as_zero`), the caller's environment restored after it; where `can_flush()` is False, unchanged."""
    saved = current() if can_flush() else None
    return _switched(saved, None if saved is None else _with_flush_bits(saved, on=True))
