#!/usr/bin/env python3
"""Packs a release gradscope binary into a platform wheel that needs nothing else (Tools/wheel/build.sh).

What it does, as `auditwheel repair` would for an extension module:

- copies the binary to gradscope/bin/gradscope (debug sections stripped);
- asks `ldd` for every shared library it loads and copies each one that is not part of glibc
  (libhdf5, libsz, libaec, libcurl and its TLS and Kerberos libraries, libcrypto, libdeflate,
  libz, libstdc++, libgcc_s, ...) into gradscope/.libs/, then sets an RPATH with patchelf: the
  binary's `$ORIGIN/../.libs`, each library's `$ORIGIN`, so they are found beside the binary
  without LD_LIBRARY_PATH (DT_RPATH rather than DT_RUNPATH: it holds for the libraries' own
  dependencies too and comes before LD_LIBRARY_PATH);
- refuses a binary that still loads anything from the Swift toolchain (it must be built with
  --static-swift-stdlib) or a library ldd cannot find;
- tags the wheel manylinux_<glibc major>_<glibc minor>_<machine> from the glibc of this machine
  (the binary and the libraries were built against it, so it needs that glibc or a newer one);
- adds the Python package gradscope (the API and the `gradscope` console script) and
  gradscope_export (the exporters, from Tools/gradscope-export/src), and writes the wheel with
  its RECORD.

Only the standard library is used; patchelf and strip are external commands.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile

# glibc's own libraries: the one dependency left outside the wheel (a manylinux wheel may assume them).
GLIBC_LIBRARIES = {
    "linux-vdso.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libresolv.so.2",
    "libutil.so.1",
    "libnsl.so.1",
    "libanl.so.1",
}

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fail(message: str) -> None:
    sys.stderr.write(f"make_wheel: {message}\n")
    sys.exit(1)


def glibc_version() -> tuple[int, int]:
    text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    match = re.fullmatch(r"glibc (\d+)\.(\d+).*", text)
    if not match:
        fail(f"this machine's C library is not glibc ({text!r}): the wheel is a manylinux one")
    return int(match.group(1)), int(match.group(2))


def shared_libraries(path: str) -> list[tuple[str, str | None]]:
    """(soname, resolved path or None when not found) for every library `ldd PATH` lists."""
    env = {key: value for key, value in os.environ.items() if key != "LD_LIBRARY_PATH"}
    output = subprocess.run(["ldd", path], capture_output=True, text=True, env=env)
    if output.returncode != 0:
        fail(f"ldd {path} failed: {output.stderr.strip() or output.stdout.strip()}")
    libraries = []
    for line in output.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            name, _, rest = line.partition("=>")
            rest = rest.strip()
            resolved = None if rest.startswith("not found") else rest.split(" (")[0].strip()
            libraries.append((name.strip(), resolved))
        elif line:
            first = line.split(" (")[0].strip()
            libraries.append((os.path.basename(first), first))
    return libraries


def record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def project_version() -> str:
    text = open(os.path.join(ROOT, "Sources", "GradScopeModel", "Version.swift"), encoding="utf-8").read()
    match = re.search(r'string\s*=\s*"([^"]+)"', text)
    if not match:
        fail("no version in Sources/GradScopeModel/Version.swift")
    return match.group(1)


METADATA = """\
Metadata-Version: 2.1
Name: gradscope
Version: {version}
Summary: Diagnose training pathologies from neural-network checkpoints (HDF5, safetensors, torch.save)
Requires-Python: >=3.9
Requires-Dist: numpy
Requires-Dist: h5py
Provides-Extra: pandas
Requires-Dist: pandas; extra == "pandas"
Description-Content-Type: text/markdown

# gradscope

The gradscope command-line tool (a Linux {machine} binary built against glibc {glibc}, with the Swift
runtime, libhdf5 and the libraries it needs inside the wheel), a Python API over its JSON, and the
`gradscope_export` exporters.

```python
import gradscope
run = gradscope.scan("runs/a")
print(run.verdict, run.findings)
```

Runs on Linux {machine} with glibc {glibc} or newer only.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--binary", required=True, help="the release gradscope binary (--static-swift-stdlib)")
    parser.add_argument("--out", required=True, help="directory the wheel is written into")
    parser.add_argument("--patchelf", default="patchelf")
    parser.add_argument("--toolchain", help="the Swift toolchain's directory (nothing may be loaded from it)")
    args = parser.parse_args()

    machine = platform.machine()
    if sys.platform != "linux" or machine != "x86_64":
        fail(f"the wheel is built on Linux x86-64 only (this is {sys.platform} {machine})")
    major, minor = glibc_version()
    tag = f"manylinux_{major}_{minor}_{machine}"
    version = project_version()

    libraries = shared_libraries(args.binary)
    missing = [name for name, resolved in libraries if resolved is None]
    if missing:
        fail(f"ldd finds no {', '.join(missing)} for {args.binary}")
    toolchain = os.path.realpath(args.toolchain) if args.toolchain else None
    bundled = []
    for name, resolved in libraries:
        real = os.path.realpath(resolved)
        if (toolchain and real.startswith(toolchain + os.sep)) or "libswift" in name or "Foundation" in name:
            fail(
                f"{args.binary} loads {name} from the Swift toolchain ({real}): build it with "
                "swift build -c release --static-swift-stdlib"
            )
        if name in GLIBC_LIBRARIES or os.path.basename(real).startswith("ld-linux"):
            continue
        bundled.append((name, real))

    with tempfile.TemporaryDirectory(prefix="gradscope-wheel-") as staging:
        package = os.path.join(staging, "gradscope")
        shutil.copytree(
            os.path.join(ROOT, "Tools", "wheel", "python", "gradscope"),
            package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        shutil.copytree(
            os.path.join(ROOT, "Tools", "gradscope-export", "src", "gradscope_export"),
            os.path.join(staging, "gradscope_export"),
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        with open(os.path.join(package, "_build_info.py"), "w", encoding="utf-8") as file:
            file.write(
                "# Written by Tools/wheel/make_wheel.py.\n"
                f'VERSION = "{version}"\nGLIBC = "{major}.{minor}"\nMACHINE = "{machine}"\n'
                f'PLATFORM_TAG = "{tag}"\n'
            )
        os.makedirs(os.path.join(package, "bin"))
        os.makedirs(os.path.join(package, ".libs"))
        binary = os.path.join(package, "bin", "gradscope")
        shutil.copyfile(args.binary, binary)
        subprocess.run(["strip", "--strip-debug", binary], check=True)
        subprocess.run([args.patchelf, "--force-rpath", "--set-rpath", "$ORIGIN/../.libs", binary], check=True)
        for name, real in bundled:
            target = os.path.join(package, ".libs", name)
            shutil.copyfile(real, target)
            os.chmod(target, 0o755)
            subprocess.run(["strip", "--strip-debug", target], check=True)
            subprocess.run([args.patchelf, "--force-rpath", "--set-rpath", "$ORIGIN", target], check=True)
        os.chmod(binary, 0o755)

        # Every library the copy loads must now come from .libs or glibc.
        for name, resolved in shared_libraries(binary):
            if resolved is None:
                fail(f"the bundled binary finds no {name}")
            inside = os.path.realpath(resolved).startswith(os.path.realpath(package) + os.sep)
            if not inside and name not in GLIBC_LIBRARIES and not name.startswith("ld-linux"):
                fail(f"the bundled binary loads {name} from {resolved}, outside the wheel")

        dist_info = f"gradscope-{version}.dist-info"
        extra = {
            f"{dist_info}/METADATA": METADATA.format(version=version, machine=machine, glibc=f"{major}.{minor}"),
            f"{dist_info}/WHEEL": (
                "Wheel-Version: 1.0\nGenerator: gradscope Tools/wheel/make_wheel.py\n"
                f"Root-Is-Purelib: false\nTag: py3-none-{tag}\n"
            ),
            f"{dist_info}/entry_points.txt": "[console_scripts]\ngradscope = gradscope._cli:main\n",
            f"{dist_info}/top_level.txt": "gradscope\ngradscope_export\n",
        }

        os.makedirs(args.out, exist_ok=True)
        wheel_path = os.path.join(args.out, f"gradscope-{version}-py3-none-{tag}.whl")
        records = []
        # Fixed timestamps and order: the same inputs give the same wheel.
        stamp = (1980, 1, 1, 0, 0, 0)
        with zipfile.ZipFile(wheel_path + ".part", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as wheel:

            def add(arcname: str, data: bytes, mode: int) -> None:
                info = zipfile.ZipInfo(arcname, date_time=stamp)
                info.external_attr = (stat.S_IFREG | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                wheel.writestr(info, data)
                records.append(f"{arcname},{record_hash(data)},{len(data)}")

            for directory, subdirectories, files in sorted(os.walk(staging)):
                subdirectories.sort()
                for file_name in sorted(files):
                    path = os.path.join(directory, file_name)
                    arcname = os.path.relpath(path, staging).replace(os.sep, "/")
                    mode = 0o755 if os.stat(path).st_mode & stat.S_IXUSR else 0o644
                    with open(path, "rb") as file:
                        add(arcname, file.read(), mode)
            for arcname, text in extra.items():
                add(arcname, text.encode("utf-8"), 0o644)
            record_name = f"{dist_info}/RECORD"
            records.append(f"{record_name},,")
            info = zipfile.ZipInfo(record_name, date_time=stamp)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            wheel.writestr(info, ("\n".join(records) + "\n").encode("utf-8"), compress_type=zipfile.ZIP_DEFLATED)
        os.replace(wheel_path + ".part", wheel_path)

    size = os.path.getsize(wheel_path)
    print(f"{wheel_path} ({size / 1e6:.1f} MB; {len(bundled)} libraries bundled: {', '.join(n for n, _ in bundled)})")


if __name__ == "__main__":
    main()
