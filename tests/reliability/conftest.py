"""The reliability suite: real processes on loopback, figures collected into one JSON report.

``W2A_RELIABILITY_QUICK=1`` (CI) shrinks sizes and durations; ``make reliability`` runs the full
sizes. Every test also asserts its goal, so a missed goal fails the suite.
"""

import json
import os
from pathlib import Path

import pytest

QUICK = os.environ.get("W2A_RELIABILITY_QUICK") == "1"
REPORT_PATH = Path(os.environ.get("W2A_RELIABILITY_REPORT", "reports/reliability.json"))
_REPORT: dict = {"mode": "quick" if QUICK else "full", "faults": [], "fuzz": {}, "auth": {}, "load": []}


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/reliability" in str(item.fspath):
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(scope="session")
def report() -> dict:
    return _REPORT


def pytest_sessionfinish(session, exitstatus):
    if not any("tests/reliability" in str(i.fspath) for i in session.items):
        return
    _REPORT["passed"] = exitstatus == 0
    REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
    REPORT_PATH.write_text(json.dumps(_REPORT, indent=1))
