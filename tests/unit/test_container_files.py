"""The Dockerfile, docker-compose.yml, .env.example and .dockerignore against the code they run.

There is no Docker engine where the tests run, so nothing here builds or starts a container. What
can drift silently is checked instead: a command the CLI no longer accepts, a ``PGCOURIER_``
variable that is no setting (pydantic-settings ignores unknown variables, so a typo would just do
nothing), a health check asking a route that is gone or that cannot pass, a root user, a fat base
image, a secret sent into the build context. ``.ci/run`` adds ``docker compose config -q`` (the
Compose schema) where the compose CLI is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import importlib
import io
import json
import os
import re
import secrets
import shlex
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import asyncpg
import pytest
import yaml
from packaging.specifiers import SpecifierSet

from pgcourier.admin.app import create_app
from pgcourier.admin.context import AdminContext
from pgcourier.cli import build_parser
from pgcourier.errors import ConfigurationError
from pgcourier.metrics import Metrics
from pgcourier.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
PGCOURIER_SERVICES = {"migrate": "migrate", "relay": "run"}  # service: the command it runs


# -- reading the files ----------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        return [args for instruction, args in self.instructions if instruction == name]

    def last(self, name: str) -> str:
        found = self.all(name)
        assert found, f"the final stage of the Dockerfile has no {name}"
        return found[-1]

    def exec_form(self, name: str) -> list[str]:
        # The shell form would wrap the command in /bin/sh -c, which does not pass SIGTERM on:
        # the relay would never drain.
        value = json.loads(self.last(name))
        assert isinstance(value, list), f"{name} must use the exec (JSON array) form"
        return [str(part) for part in value]

    def env(self) -> dict[str, str]:
        variables: dict[str, str] = {}
        for args in self.all("ENV"):
            for pair in shlex.split(args):
                name, equals, value = pair.partition("=")
                assert equals, f"ENV {args!r}: write NAME=value"
                variables[name] = value
        return variables


def dockerfile_stages(text: str) -> list[Stage]:
    """The Dockerfile's stages in order, with line continuations joined, comments dropped and
    ``ARG`` defaults declared before the first ``FROM`` substituted into ``FROM`` lines."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue  # Docker drops comment lines, inside a continuation too
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a line continuation"
    arguments: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        instruction, _, args = line.partition(" ")
        instruction, args = instruction.upper(), args.strip()
        if instruction == "ARG" and not stages:
            name, _, default = args.partition("=")
            arguments[name] = default
        elif instruction == "FROM":
            image = re.sub(
                r"\$\{?(\w+)\}?", lambda m: arguments.get(m.group(1), ""), args.split()[0]
            )
            stages.append(Stage(base=image))
        else:
            assert stages, f"{instruction} before any FROM"
            stages[-1].instructions.append((instruction, args))
    assert stages, "the Dockerfile has no FROM"
    return stages


STAGES = dockerfile_stages((ROOT / "Dockerfile").read_text(encoding="utf-8"))
IMAGE = STAGES[-1]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines (Compose's env-file syntax, as far as .env.example uses it)."""
    variables: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, equals, value = line.partition("=")
            assert equals, f"{path.name}: {line!r} is not NAME=value"
            variables[name.strip()] = value.strip()
    return variables


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):  # the ["NAME=value"] form
        environment = dict(item.partition("=")[::2] for item in environment)
    return {str(name): str(value) for name, value in environment.items()}


def service_argv(name: str) -> list[str]:
    """What the service's container runs: its entrypoint (the image's unless overridden)
    followed by its command."""
    service = SERVICES[name]
    entrypoint = service.get("entrypoint", IMAGE.exec_form("ENTRYPOINT"))
    command = service["command"]
    if isinstance(entrypoint, str):
        entrypoint = shlex.split(entrypoint)
    if isinstance(command, str):
        command = shlex.split(command)
    return [str(part) for part in [*entrypoint, *command]]


def parse_cli(argv: list[str]) -> Any:
    """``argv`` (the program name first) parsed by pgcourier's own parser, or a test failure
    carrying argparse's message."""
    assert argv[0] in PROJECT["scripts"], f"{argv[0]!r} is no console script of this project"
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            return build_parser().parse_args(argv[1:])
    except SystemExit as exc:
        if exc.code == 0:  # --help, --version: accepted, nothing to run
            return None
        pytest.fail(f"pgcourier refuses {argv[1:]}: {stderr.getvalue().strip()}")


def setting_name(variable: str) -> str | None:
    """The Settings field a variable sets (``PGCOURIER_ADMIN_TOKEN``: ``admin_token``)."""
    prefix = "PGCOURIER_"
    return variable[len(prefix) :].lower() if variable.startswith(prefix) else None


def settings_from(monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]) -> Settings:
    """Settings loaded from exactly these variables, as the container would see them."""
    for name in [n for n in os.environ if n.startswith("PGCOURIER_")]:
        monkeypatch.delenv(name)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def container_environment(service: str, token: str | None) -> dict[str, str]:
    """The image's ENV, then .env.example (its token filled in when given), then the
    service's own environment: Compose's order of precedence."""
    example = env_file(ROOT / ".env.example")
    if token is not None:
        example["PGCOURIER_ADMIN_TOKEN"] = token
    return {**IMAGE.env(), **example, **service_environment(SERVICES[service])}


# -- the image ------------------------------------------------------------------------------------


def test_every_stage_is_a_slim_python_the_project_supports() -> None:
    supported = SpecifierSet(PROJECT["requires-python"])
    for stage in STAGES:
        match = re.fullmatch(r"python:(\d+\.\d+)(?:\.\d+)?-slim(?:-\w+)?", stage.base)
        assert match, f"FROM {stage.base}: expected python:<version>-slim"
        assert supported.contains(match.group(1) + ".0"), f"{stage.base} is outside {supported}"


def test_the_image_runs_as_a_user_other_than_root() -> None:
    # The last USER is the one the container runs as; without one it would be root.
    user = IMAGE.last("USER").split(":")[0]
    assert user not in ("", "root", "0"), f"USER {user}"


def test_the_image_runs_the_relay_through_the_projects_console_script() -> None:
    argv = IMAGE.exec_form("ENTRYPOINT") + IMAGE.exec_form("CMD")
    script = PROJECT["scripts"][argv[0]]
    module, _, function = script.partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    assert parse_cli(argv).command == "run"


def test_the_image_sets_only_settings_that_exist() -> None:
    env = IMAGE.env()
    courier = {name for name in env if name.startswith("PGCOURIER_")}
    assert courier, "the image sets no PGCOURIER_ variable"
    assert {setting_name(n) for n in courier} <= set(Settings.model_fields)
    assert set(env) - courier <= {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}


def test_the_image_alone_refuses_to_serve_beyond_loopback_without_a_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigurationError, match="PGCOURIER_ADMIN_TOKEN"):
        settings_from(monkeypatch, IMAGE.env())
    settings = settings_from(
        monkeypatch, {**IMAGE.env(), "PGCOURIER_ADMIN_TOKEN": secrets.token_urlsafe(32)}
    )
    assert (settings.admin_host, settings.log_format) == ("0.0.0.0", "json")
    assert str(settings.admin_port) in IMAGE.last("EXPOSE").split()


def healthcheck_command() -> list[str]:
    # HEALTHCHECK [--option=value ...] CMD ["program", "arg", ...]
    exec_form = re.search(r"(?:^|\s)CMD\s+(\[.*\])$", IMAGE.last("HEALTHCHECK"))
    assert exec_form, "HEALTHCHECK must use CMD in the exec (JSON array) form"
    return [str(part) for part in json.loads(exec_form.group(1))]


def test_the_health_check_asks_a_route_of_the_admin_app() -> None:
    url = re.search(r"https?://[^'\"\s]+", " ".join(healthcheck_command()))
    assert url, "the health check names no URL"
    path = urlsplit(url.group()).path
    app = create_app(AdminContext(pool=cast(asyncpg.Pool, None), metrics=Metrics()))
    routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}
    assert ("GET", path) in routes, f"{path} is no GET route of the admin app"


async def _health_check_exit(variables: dict[str, str]) -> tuple[int, str]:
    # Only the variables the container would have (not this process's PGCOURIER_ ones).
    env = {n: v for n, v in os.environ.items() if not n.startswith("PGCOURIER_")} | variables
    command = healthcheck_command()
    assert command[0] == "python"
    process = await asyncio.create_subprocess_exec(
        sys.executable, *command[1:], env=env, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


@pytest.mark.parametrize("open_operations", [True, False])
async def test_the_health_check_passes_against_the_admin_app_and_fails_without_it(
    aiohttp_server: Any, open_operations: bool
) -> None:
    # The command exactly as the Dockerfile has it, against the admin app on a free port (the
    # check reads PGCOURIER_ADMIN_PORT), with the token the container would have: /health is
    # guarded too when the operations routes are not open.
    token = secrets.token_urlsafe(32)
    context = AdminContext(
        pool=cast(asyncpg.Pool, None),
        metrics=Metrics(),
        token=token,
        open_operations=open_operations,
    )
    server = await aiohttp_server(create_app(context))
    variables = {"PGCOURIER_ADMIN_PORT": str(server.port), "PGCOURIER_ADMIN_TOKEN": token}
    assert await _health_check_exit(variables) == (0, "")
    code, stderr = await _health_check_exit({**variables, "PGCOURIER_ADMIN_TOKEN": "x" * 32})
    if open_operations:  # a wrong token is not even looked at on /health
        assert code == 0
    else:
        assert (code, stderr.strip()) == (1, "unhealthy: HTTP Error 401: Unauthorized")
    port = server.port
    await server.close()
    code, stderr = await _health_check_exit({**variables, "PGCOURIER_ADMIN_PORT": str(port)})
    assert code == 1
    assert stderr.startswith("unhealthy:")
    assert len(stderr.strip().splitlines()) == 1  # one line in `docker inspect`, no traceback


# -- the compose stack ----------------------------------------------------------------------------


@pytest.mark.parametrize(("service", "command"), PGCOURIER_SERVICES.items())
def test_each_pgcourier_service_runs_a_command_the_cli_accepts(service: str, command: str) -> None:
    assert SERVICES[service].get("build") in (".", {"context": "."}), "built from this Dockerfile"
    assert parse_cli(service_argv(service)).command == command


def test_every_service_running_the_image_is_checked() -> None:
    # A new service built from the image must be added to PGCOURIER_SERVICES to be checked.
    built = {name for name, service in SERVICES.items() if "build" in service}
    assert built == set(PGCOURIER_SERVICES)


@pytest.mark.parametrize("service", PGCOURIER_SERVICES)
def test_compose_sets_only_settings_that_exist(service: str) -> None:
    names = set(service_environment(SERVICES[service])) | set(env_file(ROOT / ".env.example"))
    unknown = {n for n in names if setting_name(n) not in Settings.model_fields}
    assert not unknown, f"not settings: {sorted(unknown)}"


@pytest.mark.parametrize("service", PGCOURIER_SERVICES)
def test_each_service_starts_with_a_token_and_not_with_the_placeholder(
    monkeypatch: pytest.MonkeyPatch, service: str
) -> None:
    # .env.example copied as it is must not start a server beyond loopback (its placeholder is
    # no token), and the message must say which variable to fill in.
    with pytest.raises(ConfigurationError, match="PGCOURIER_ADMIN_TOKEN"):
        settings_from(monkeypatch, container_environment(service, token=None))
    token = secrets.token_urlsafe(32)
    settings = settings_from(monkeypatch, container_environment(service, token))
    # The database is the compose Postgres, under the database its image creates.
    assert settings.database_url is not None
    url = urlsplit(settings.database_url)
    assert url.hostname in SERVICES
    postgres = service_environment(SERVICES[url.hostname])
    assert url.path.lstrip("/") == postgres.get("POSTGRES_DB", "postgres")
    assert url.password == postgres["POSTGRES_PASSWORD"]
    assert url.port == 5432


def test_the_relay_publishes_the_admin_port_and_reads_the_token_from_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    relay = SERVICES["relay"]
    settings = settings_from(monkeypatch, container_environment("relay", secrets.token_urlsafe(32)))
    targets = [str(port).rsplit(":", 1)[-1].split("/")[0] for port in relay["ports"]]
    assert str(settings.admin_port) in targets
    env_files = [e["path"] if isinstance(e, dict) else e for e in relay["env_file"]]
    assert ".env" in env_files
    # Migrations are the migrate service's job.
    assert settings.auto_migrate is False
    # Compose's default 10s would kill the relay while SIGTERM still drains.
    grace = relay["stop_grace_period"]
    assert re.fullmatch(r"\d+s", grace)
    assert int(grace[:-1]) > settings.shutdown_timeout


def test_the_stack_starts_in_order() -> None:
    assert SERVICES["postgres"]["healthcheck"]["test"]
    migrate, relay = SERVICES["migrate"], SERVICES["relay"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert relay["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # The test Postgres (README, Development) stays where the README says.
    assert "127.0.0.1:55432:5432" in SERVICES["postgres"]["ports"]


# -- the README ----------------------------------------------------------------------------------


def test_the_readme_container_section_matches_the_files() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Container\n", 1)[1].split("\n## ", 1)[0]
    commands = 0
    for span in re.findall(r"`([^`\n]+)`", section):
        words = shlex.split(span)
        if "pgcourier" not in words or words[:2] == ["docker", "build"]:
            continue  # not a command, or pgcourier is the image's tag there
        if words[:3] == ["docker", "compose", "exec"]:
            assert words[3] in SERVICES, f"{span}: no service {words[3]}"
        parse_cli(words[words.index("pgcourier") :])
        commands += 1
    assert commands >= 3, "the README's Container section lost its commands"
    # The token recipe is the same everywhere; the address is where the relay is published.
    recipe = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    assert recipe in section
    assert recipe in (ROOT / ".env.example").read_text(encoding="utf-8")
    for host_port in re.findall(r"http://([\d.]+:\d+)", section):
        assert any(str(p).startswith(host_port + ":") for p in SERVICES["relay"]["ports"])


# -- the build context ----------------------------------------------------------------------------


def in_build_context(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore lets ``path`` into the build context: the last matching pattern
    wins, ``!`` re-includes, and excluding a directory excludes what is in it. fnmatch's ``*``
    also crosses ``/``, which Docker's does not; the patterns used here mean the same either
    way."""
    included = True
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
            included = negated
    return included


def test_the_build_context_holds_the_sources_and_no_secret() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (".env", ".env.example", ".venv/bin/python", ".git/HEAD", ".pgcourier/pgdata"):
        assert not in_build_context(path, patterns), f"{path} would be sent to the build"
    copied = [src for args in STAGES[0].all("COPY") for src in args.split()[:-1]]
    assert copied
    for source in copied:
        for path in [source] if (ROOT / source).is_file() else _files(ROOT / source):
            assert in_build_context(path, patterns), f"the build needs {path}"


def _files(directory: Path) -> list[str]:
    return [
        str(p.relative_to(ROOT))
        for p in directory.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
