import subprocess
import sys


def test_the_robot_side_client_imports_without_torch():
    """A robot that only talks to the policy server must not need torch (issue 20)."""
    code = "import sys, w2a_client; sys.exit(int('torch' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
