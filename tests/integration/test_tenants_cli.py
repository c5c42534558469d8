"""`agentstream tenants hash-key` and `tenants check`, run as the real command."""

from __future__ import annotations

import subprocess
from pathlib import Path

from agentstream.settings import TENANTS_ENV
from agentstream.tenancy import hash_api_key

from .cli import COMMAND, REPO, cli_env, one_line, run

KEY = "k3y-0123456789abcdefghijklmnopqrstuvwxyz"


def test_hash_key_reads_the_key_from_stdin_and_prints_its_hash() -> None:
    done = subprocess.run([*COMMAND, "tenants", "hash-key"], input=KEY + "\n", env=cli_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == hash_api_key(KEY)
    assert KEY not in done.stdout + done.stderr


def test_check_lists_tenants_and_names_a_bad_field(tmp_path: Path) -> None:
    good = tmp_path / "tenants.yaml"
    good.write_text(f"tenants:\n  acme:\n    limits: {{max_running_tasks: 3}}\n"
                    f"    api_keys: [{{name: ci, hash: '{hash_api_key(KEY)}', roles: [operator]}}]\n  globex: {{}}\n")
    done = run("tenants", "check", env=cli_env(**{TENANTS_ENV: str(good)}))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{good}: 2 tenants", "  acme: max_running_tasks=3; keys: ci (operator)",
                                        "  globex: no limits; keys: no API keys"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("tenants:\n  acme: {limits: {daily_cost: 5}}\n")
    failed = run("tenants", "check", "--tenants", str(bad), env=cli_env())
    assert failed.returncode != 0
    assert f"Invalid tenants file {bad}:" in failed.stderr
    assert "unknown key 'tenants.acme.limits.daily_cost'; valid keys there are" in failed.stderr
    unset = {k: v for k, v in cli_env().items() if k != TENANTS_ENV}
    missing = run("tenants", "check", env=unset)
    assert one_line(missing.stderr) == f"No tenants file: pass --tenants FILE or set {TENANTS_ENV}."
