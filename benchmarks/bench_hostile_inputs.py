"""Benchmark of hostile probe inputs (not a test): peak RSS and seconds of whole CLI processes.

Run: ``python benchmarks/bench_hostile_inputs.py [--code PATH] [--limit-gb 8] [--timeout 300]``.

Each case is one ``cnnreport generate`` process on a tiny CNN, started fresh; its peak RSS comes
from ``os.wait4`` (the kernel's ``ru_maxrss`` of that one child) and its time from the wall
clock around it. The inputs are made here, in a temporary folder:

* ``png-9000``: a 9000x9000 RGB PNG, flat with a few shapes (about 100 KB on disk, 243 MB
  decoded), with no ``--image-size``, then with ``--image-size 224 224``;
* ``png-9000 x3``: three such files with ``--image-size 224 224``;
* ``jpeg-9000``: the same picture as a JPEG with ``--image-size 224 224``;
* ``png-bomb``: a 74-byte PNG whose header declares 100000x100000 pixels;
* ``npy-terabyte``: a 144-byte ``.npy`` whose header declares a float32 array of 1 TiB.

``--code PATH`` puts that checkout of cnnreport first on ``PYTHONPATH`` (compare the current
code with an older one). Every child runs under an address-space limit (``--limit-gb``) so
that an old version's runaway decode fails inside its own process instead of taking the
machine's memory; a case that hits it prints the error it ended with.

The last line times the zip CRC check that guards checkpoints against flipped bytes, on a
ResNet-50-sized (100 MB) state dict, beside the SHA-256 the report already computes.
"""

from __future__ import annotations

import argparse
import os
import resource
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

NET = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))
"""


def flat_picture(size: int):
    """A mostly flat RGB picture with a few shapes: compresses to ~100 KB as a PNG."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (200, 180, 150))
    draw = ImageDraw.Draw(image)
    draw.rectangle((size // 8, size // 8, size // 2, size // 2), fill=(40, 90, 160))
    draw.ellipse((size // 2, size // 3, size - size // 10, size - size // 8), fill=(180, 40, 40))
    draw.line((0, size - 1, size - 1, 0), fill=(0, 0, 0), width=max(1, size // 300))
    return image


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path: Path, width: int, height: int) -> None:
    """A valid PNG signature and header declaring width x height, with one tiny IDAT."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))


def terabyte_npy(path: Path) -> None:
    """A .npy whose header declares float32 (2**38,) = 1 TiB, followed by 16 bytes of data."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (274877906944,), }"
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + b"\0" * 16)


def make_inputs(folder: Path) -> dict[str, Path]:
    (folder / "net.py").write_text(NET)
    picture = flat_picture(9000)
    big = folder / "big.png"
    picture.save(big)
    three = folder / "three"
    three.mkdir()
    for index in range(3):
        (three / f"big{index}.png").write_bytes(big.read_bytes())
    jpeg = folder / "big.jpg"
    picture.save(jpeg, quality=90)
    del picture
    bomb = folder / "bomb.png"
    bomb_png(bomb, 100_000, 100_000)
    npy = folder / "terabyte.npy"
    terabyte_npy(npy)
    return {"big": big, "three": three, "jpeg": jpeg, "bomb": bomb, "npy": npy}


def run_case(label: str, args: list[str], folder: Path, code: Path, limit_gb: float, timeout: float) -> None:
    env = dict(os.environ, PYTHONPATH=str(code))
    limit = int(limit_gb * 1024**3)

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    command = [sys.executable, "-m", "cnnreport.cli", "generate", str(folder / "net.py") + ":Net", *args,
               "-o", str(folder / "report.html"), "-q"]
    err_path = folder / "stderr.txt"
    with open(err_path, "wb") as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=err,
                                 preexec_fn=cap_memory)
        killer = threading.Timer(timeout, child.kill)
        killer.start()
        # wait4 gives this one child's rusage (RUSAGE_CHILDREN would give the largest so far)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        killed = "" if killer.is_alive() else f" (killed after {timeout:.0f} s)"
        killer.cancel()
    child.returncode = os.waitstatus_to_exitcode(status)
    peak_mb = usage.ru_maxrss / 1024.0  # kilobytes on Linux
    text = err_path.read_text("utf-8", "replace").strip().splitlines()
    print(f"{label:<40} exit {child.returncode:>3}  peak RSS {peak_mb:8.1f} MB  {seconds:7.2f} s{killed}")
    if text:
        print(f"    stderr: {len(text)} line(s), the last: {text[-1][:150]}")


def crc_cost(folder: Path, code: Path) -> None:
    sys.path.insert(0, str(code))
    import torch

    from cnnreport.support.hashing import file_sha256

    state = {f"layer{i}.weight": torch.randn(255_000) for i in range(100)}  # 25.5 M floats
    path = folder / "resnet50_sized.pt"
    torch.save(state, path)
    size_mb = path.stat().st_size / 1e6

    file_sha256(path)  # warm the page cache, as the report's own hashing does
    start = time.perf_counter()
    file_sha256(path)
    sha = time.perf_counter() - start
    try:
        from cnnreport.io.archives import zip_damage
    except ImportError:  # code from before the check: time what it would run
        def zip_damage(path: Path) -> str | None:
            with zipfile.ZipFile(path) as archive:
                return archive.testzip()
    start = time.perf_counter()
    bad = zip_damage(path)
    crc = time.perf_counter() - start
    print(f"zip CRC check of a {size_mb:.0f} MB checkpoint: {crc:.3f} s (its SHA-256: {sha:.3f} s; damage found: {bad})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose cnnreport is measured")
    parser.add_argument("--limit-gb", type=float, default=8.0, help="address-space limit of each child")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a child is killed")
    parser.add_argument("--skip-crc", action="store_true", help="leave out the CRC timing")
    args = parser.parse_args()
    print(f"code: {args.code}; {os.cpu_count()} cores; children limited to {args.limit_gb:g} GB of address space")
    with tempfile.TemporaryDirectory(prefix="cnnreport-hostile-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        inputs = make_inputs(folder)
        print(f"inputs made in {time.perf_counter() - start:.1f} s: big.png {inputs['big'].stat().st_size / 1e3:.0f} KB, "
              f"big.jpg {inputs['jpeg'].stat().st_size / 1e3:.0f} KB, bomb.png {inputs['bomb'].stat().st_size} B, "
              f"terabyte.npy {inputs['npy'].stat().st_size} B")
        cases = [
            ("png 9000x9000, no --image-size", [str(inputs["big"])]),
            ("png 9000x9000, --image-size 224 224", [str(inputs["big"]), "--image-size", "224", "224"]),
            ("3 png 9000x9000, --image-size 224 224", [str(inputs["three"]), "--image-size", "224", "224"]),
            ("jpeg 9000x9000, --image-size 224 224", [str(inputs["jpeg"]), "--image-size", "224", "224"]),
            ("png declaring 100000x100000", [str(inputs["bomb"]), "--image-size", "224", "224"]),
            ("npy declaring 1 TiB", [str(inputs["npy"])]),
        ]
        for label, case_args in cases:
            run_case(label, case_args, folder, args.code, args.limit_gb, args.timeout)
        if not args.skip_crc:
            crc_cost(folder, args.code)


if __name__ == "__main__":
    main()
