"""Generate the Python gRPC stubs from protos/ into the robot client package (``make protos``):
packages/w2a-client/src/w2a_client/proto/.

grpc_tools writes absolute imports (``from w2a.v1 import policy_pb2``); they are rewritten to
relative ones so the stubs live inside the ``w2a_client.proto`` package.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
DEFAULT_OUT = ROOT / "packages" / "w2a-client" / "src" / "w2a_client" / "proto"


def generate(out: Path = DEFAULT_OUT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", *map(str, protos)]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = []
    for path in sorted(out.rglob("*.py*")):
        if path.suffix not in {".py", ".pyi"}:
            continue
        text = re.sub(r"^from w2a\.v1 import (\w+)", r"from . import \1", path.read_text(), flags=re.M)
        path.write_text(text)
        written.append(path)
    packages = {out}
    for path in written:
        packages.update(parent for parent in path.parents if out in parent.parents)
    for package in packages:
        init = package / "__init__.py"
        if not init.exists():
            init.write_text("")
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    for path in generate(target):
        print(path.relative_to(target))
