"""The package build generates the gRPC code from proto/skiplock.proto, so a wheel (and
`pip install .`) carries it while the repository never commits it. Everything else about the
package is declared in pyproject.toml."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTO = ROOT / "proto" / "skiplock.proto"
GENERATED = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi", "_pb2_grpc.pyi")


class BuildPyWithGrpc(build_py):
    """build_py that writes freshly generated gRPC modules next to the copied sources."""

    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        # A checkout's own `make proto` output may be stale: never copy it, generate it.
        modules: list[tuple[str, str, str]] = super().find_package_modules(package, package_dir)
        return [module for module in modules if not module[2].endswith(GENERATED)]

    def run(self) -> None:
        super().run()
        # An editable install imports from the checkout, so the code is generated there.
        out_dir = ROOT if self.editable_mode else Path(self.build_lib)
        self.generate_grpc_code(out_dir)

    def generate_grpc_code(self, out_dir: Path) -> None:
        from grpc_tools import protoc

        well_known_types = files("grpc_tools") / "_proto"
        args = [
            "grpc_tools.protoc",
            f"-I{ROOT}",
            f"-I{well_known_types}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTO),
        ]
        self.announce(f"generating gRPC code into {out_dir / 'proto'}", level=2)
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {PROTO}")


setup(cmdclass={"build_py": BuildPyWithGrpc})
