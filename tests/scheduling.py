"""Which integration test files may run beside other work, and how the default run splits them.

The default ``pytest`` runs on two workers (pytest-xdist, ``-n 2`` in pyproject.toml): most of an
integration test's time is waiting (servers, relays, receivers, CLI processes), so two workers
nearly halve the run. Files listed in :data:`CONCURRENT_SAFE` neither measure time (latency,
deadlines, leases, restarts, back-off) nor fail when the machine is busy (their waits are 15 s
and more): each is a unit of work of its own, so a module's fixtures (the plan tests' history) are
built once. Every other integration file, including any new one until it is listed here, is
``serial``: all of them form one unit, run by one worker one test after another, so no two of
them ever run at once. CI also runs the concurrent-safe files on two Postgres versions side by
side, and the serial ones one version at a time in one process (``-n 0``, .ci/run).
"""

from __future__ import annotations

from pathlib import PurePosixPath

CONCURRENT_SAFE = frozenset(
    {
        "test_admin.py",
        "test_admin_security.py",
        "test_api.py",
        "test_api_fuzz.py",
        "test_api_manage.py",
        "test_api_schemathesis.py",
        "test_attempt_paging.py",
        "test_claim_races.py",
        "test_cli.py",
        "test_cli_safety.py",
        "test_console.py",
        "test_console_browser.py",
        "test_console_fuzz.py",
        "test_data_safety.py",
        "test_event_ids.py",
        "test_event_types_api.py",
        "test_event_types_cli.py",
        "test_fanout_rules.py",
        "test_header_masking.py",
        "test_least_privilege.py",
        "test_logging.py",
        "test_migrations.py",
        "test_plans.py",
        "test_postgres_versions.py",
        "test_readme_promises.py",
        "test_secrets_at_rest.py",
        "test_secrets_never_logged.py",
        "test_slack_safety.py",
        "test_store.py",
        "test_tenant_keys.py",
        "test_tenant_plans.py",
        "test_tenants.py",
        "test_verify_tool.py",
    }
)

INTEGRATION = PurePosixPath("tests/integration")


def unit_of_work(nodeid: str) -> str:
    """The xdist unit a test belongs to: ``serial`` or its file (node ids are rootdir-relative)."""
    path = PurePosixPath(nodeid.split("::", 1)[0])
    if path.parent == INTEGRATION and path.name not in CONCURRENT_SAFE:
        return "serial"
    return str(path)
