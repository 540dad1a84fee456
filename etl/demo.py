"""`make demo`: the main job end to end against the sandbox CRM seeded with sample data.

Starts the sandbox, runs a dry run and then the real import of sample_data/, prints each
summary and leaves the reports in reports/demo-dry-run and reports/demo.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from etl.sandbox.testing import start_sandbox

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "relationships.csv"
SEED = ROOT / "sample_data" / "crm_seed.json"
MAPPING = ROOT / "mappings" / "example.yaml"
SANDBOX_RATE = "20"  # the sandbox has no limit; the real CRM gets the conservative default
FINISHED = (0, 1)  # 1 = finished with failed rows, which the sample data has on purpose


def run_import(label: str, *extra: str, env: dict[str, str]) -> None:
    print(f"\n=== {label} ===", flush=True)
    command = [sys.executable, "-m", "etl", "import", str(SAMPLE), "--mapping", str(MAPPING)]
    command += ["--rate", SANDBOX_RATE]
    result = subprocess.run([*command, *extra], env=env, check=False)
    if result.returncode not in FINISHED:
        sys.exit(f"demo: the import stopped with exit code {result.returncode}")


def main() -> None:
    key = secrets.token_hex(16)
    with start_sandbox(SEED, api_key=key) as crm:
        print(f"Sandbox CRM seeded from {SEED.relative_to(ROOT)} at {crm.url}")
        env = {**os.environ, "LACRM_API_URL": crm.url, "LACRM_API_KEY": key}
        run_import("Dry run", "--dry-run", "--report-dir", "reports/demo-dry-run", env=env)
        run_import("Import", "--yes", "--report-dir", "reports/demo", env=env)
        run_import("The same file again", "--yes", "--report-dir", "reports/demo-again", env=env)
    print("\nReports: reports/demo-dry-run, reports/demo, reports/demo-again")


if __name__ == "__main__":
    main()
