"""Pack onnxruntime-gpu for a lent GPU machine that takes at most 64 MiB per call (docs/gpu.md).

The wheel is 256 MB; its CUDA provider library carries kernels for sm_75..sm_120. This keeps the
sm_90 (H100/H200) kernels, zero-fills the payloads of the others (offsets unchanged, so the library
still loads), drops libonnxruntime.so (the Python binding does not link it) and zstd-compresses the
rest (xz): about 60 MB. benchmarks/device/run.sh unpacks it on the machine.

    python -m benchmarks.device.pack_onnxruntime_gpu --version 1.31.1 --out .gpu
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
BIG = ("libonnxruntime_providers_cuda.so", "onnxruntime_pybind11_state", "libonnxruntime.so.",
       "libonnxruntime_providers_tensorrt.so")


def keep_only_sm(library: Path, sm: int) -> int:
    """Zero-fill every cubin of `library`'s .nv_fatbin section that is not for `sm`; returns bytes zeroed."""
    out = subprocess.run(["readelf", "-S", "-W", str(library)], capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if ".nv_fatbin" in x)
    fields = line.split("]", 1)[1].split()
    offset, size = int(fields[3], 16), int(fields[4], 16)
    buf = bytearray(library.read_bytes())
    pos, end_sec, zeroed = offset, offset + size, 0
    while pos < end_sec:
        pos = buf.find(struct.pack("<I", FATBIN_MAGIC), pos, end_sec)
        if pos < 0:
            break
        _, _, header, fat_size = struct.unpack_from("<IHHQ", buf, pos)
        entry, end = pos + header, pos + header + fat_size
        while entry < end:
            _, _, entry_header, padded = struct.unpack_from("<HHII", buf, entry)
            arch = struct.unpack_from("<I", buf, entry + 28)[0]
            if arch != sm:
                buf[entry + entry_header : entry + entry_header + padded] = bytes(padded)
                zeroed += padded
            entry += entry_header + padded
        pos = end
    library.write_bytes(buf)
    return zeroed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="1.31.1")
    parser.add_argument("--sm", type=int, default=90)
    parser.add_argument("--out", type=Path, default=Path(".gpu"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp",
                        "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                        "-d", str(tmp), f"onnxruntime-gpu=={args.version}"], check=True)
        wheel = next(tmp.glob("onnxruntime_gpu-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp / "site")
        capi = tmp / "site" / "onnxruntime" / "capi"
        provider = capi / "libonnxruntime_providers_cuda.so"
        print(f"zeroed {keep_only_sm(provider, args.sm) / 1e6:.0f} MB of non-sm_{args.sm} kernels")
        binding = next(capi.glob("onnxruntime_pybind11_state*.so"))
        for src, name in ((provider, "providers_cuda.so.xz"), (binding, "pybind11_state.so.xz")):
            # xz, not zstd: Python's lzma unpacks it on the machine, which may lack a zstd binary.
            with (args.out / name).open("wb") as sink:
                subprocess.run(["xz", "-9", "-T0", "-c", str(src)], stdout=sink, check=True)
        (args.out / "binding_name").write_text(binding.name)
        for path in list(capi.iterdir()):
            if any(path.name.startswith(b) for b in BIG):
                path.unlink()
        shutil.make_archive(str(args.out / "onnxruntime_py"), "gztar", tmp / "site", "onnxruntime")
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"{args.out}: {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
