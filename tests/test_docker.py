"""docker/: the compose file, the Dockerfile and .env.example agree with each other and the CLI.

No Docker engine is needed: the files are parsed, and every lrsearch command in them (compose
commands, the bash blocks of docker/README.md and README.md) is parsed by the real click CLI, so
a renamed command or option fails here.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

from lrsearch.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

# Compose interpolation: $$ is a literal $; ${VAR}, ${VAR:-default}, ${VAR-default},
# ${VAR:?error}, ${VAR?error}; $VAR.
_VAR = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)"
)


def _variables(value: Any) -> list[tuple[str, str | None, str | None]]:
    """Every (name, operator, argument) interpolated anywhere in a loaded YAML value."""
    if isinstance(value, dict):
        return [v for item in value.items() for part in item for v in _variables(part)]
    if isinstance(value, list):
        return [v for part in value for v in _variables(part)]
    if not isinstance(value, str):
        return []
    return [
        (m["name"] or m["bare"], m["op"], m["arg"])
        for m in _VAR.finditer(value)
        if m.group() != "$$"
    ]


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """What compose makes of a value when ``env`` (e.g. an .env file) is all that is set."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group() == "$$":
            return "$"
        name, op, arg = m["name"] or m["bare"], m["op"], m["arg"]
        current = env.get(name)
        if op == ":-" and not current:
            return arg
        if op == "-" and current is None:
            return arg
        if op in (":?", "?") and not current:
            raise AssertionError(f"${{{name}}} is required: {arg}")
        return current or ""

    return _VAR.sub(one, value)


def _env_example() -> dict[str, str]:
    """The active ``VAR=value`` lines of docker/.env.example."""
    lines = (DOCKER / ".env.example").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if re.match(r"[A-Z_][A-Z0-9_]*=", line)]
    return {name: value for name, value in pairs}


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


@pytest.fixture(scope="module", params=["defaults", ".env.example"])
def compose(request: pytest.FixtureRequest, raw: dict[str, Any]) -> dict[str, Any]:
    """compose.yaml as compose sees it with no .env, and with .env.example copied to .env."""
    env = {} if request.param == "defaults" else _env_example()
    return _interpolate(raw, env)


def _lrsearch_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run the lrsearch entrypoint of the image built from docker/Dockerfile."""
    return {
        name: s for name, s in compose["services"].items() if "build" in s and "entrypoint" not in s
    }


def _check_against_cli(args: list[str], where: str) -> None:
    """``lrsearch ARGS`` names a real command and real options, and click parses it."""
    assert args, f"{where}: no lrsearch command"
    name, rest = args[0], args[1:]
    assert name in cli.commands, f"{where}: 'lrsearch {name}' is not a command of the CLI"
    command = cli.commands[name]
    options = [p for p in command.params if isinstance(p, click.Option)]
    known = {o for p in options for o in (*p.opts, *p.secondary_opts)} | {"--help"}
    for token in rest:
        if token.startswith("-"):
            option = token.split("=", 1)[0]
            assert option in known, (
                f"{where}: 'lrsearch {name}' has no option {option}; it has {sorted(known)}"
            )
    try:
        command.make_context(name, list(rest))
    except click.ClickException as exc:
        pytest.fail(f"{where}: 'lrsearch {' '.join(args)}' does not parse: {exc.format_message()}")


# --- compose.yaml ---------------------------------------------------------------------------


def test_compose_has_the_services(raw: dict[str, Any]) -> None:
    assert {"postgres", "mlflow", "storage-proxy", "create", "worker", "worker-cpu"} <= set(
        raw["services"]
    )


def test_postgres_has_a_healthcheck_a_volume_and_the_init_scripts(compose: dict[str, Any]) -> None:
    pg = compose["services"]["postgres"]
    assert pg["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert "postgres-data:/var/lib/postgresql/data" in pg["volumes"]
    assert "./initdb:/docker-entrypoint-initdb.d:ro" in pg["volumes"]
    assert (DOCKER / "initdb").is_dir()


def test_named_volumes_are_declared_and_used(compose: dict[str, Any]) -> None:
    used = {
        v.split(":", 1)[0]
        for s in compose["services"].values()
        for v in s.get("volumes", [])
        if not v.startswith((".", "/", "~"))
    }
    assert used == set(compose["volumes"])


def test_healthy_conditions_point_at_services_with_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, s in services.items():
        for target, dep in s.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            if dep["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health"


def test_mlflow_server_on_postgres_with_proxied_artifacts(compose: dict[str, Any]) -> None:
    mlflow = compose["services"]["mlflow"]
    assert mlflow["entrypoint"] == ["mlflow"]
    command = mlflow["command"]
    assert command[0] == "server"
    assert command[command.index("--artifacts-destination") + 1] == "/mlartifacts"
    assert "--serve-artifacts" in command
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--port") + 1] == "5000"
    assert "mlflow-artifacts:/mlartifacts" in mlflow["volumes"]
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "/health" in " ".join(mlflow["healthcheck"]["test"])
    # The backend URI (with the password) comes from the environment, not the command line.
    assert not any("postgresql" in part for part in command)
    assert urlsplit(mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"]).hostname == "postgres"


def test_create_waits_for_postgres_and_mlflow(compose: dict[str, Any]) -> None:
    create = compose["services"]["create"]
    assert create["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert create["depends_on"]["mlflow"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ["worker", "worker-cpu"])
def test_workers_retry_until_the_study_exists(compose: dict[str, Any], name: str) -> None:
    worker = compose["services"][name]
    assert worker["restart"] == "on-failure"
    assert worker["depends_on"]["create"]["condition"] == "service_started"
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_gpu_worker_reserves_the_gpus(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert worker["profiles"] == ["gpu"]
    assert worker["command"][worker["command"].index("--devices") + 1] == "auto"
    # What `docker compose up` starts by default runs on any host: no GPU reservation.
    for name in ("postgres", "mlflow", "create"):
        assert "deploy" not in compose["services"][name], name
        assert "profiles" not in compose["services"][name], name
    assert "deploy" not in compose["services"]["worker-cpu"]


def test_lrsearch_commands_exist_in_the_cli(compose: dict[str, Any]) -> None:
    services = _lrsearch_services(compose)
    assert set(services) == {"create", "worker", "worker-cpu", "storage-proxy"}
    for name, s in services.items():
        _check_against_cli(s["command"], f"compose service {name}")


def test_storage_proxy_serves_the_database(compose: dict[str, Any], raw: dict[str, Any]) -> None:
    proxy = compose["services"]["storage-proxy"]
    command = proxy["command"]
    assert command[0] == "storage-proxy"
    assert command[command.index("--host") + 1] == "0.0.0.0"
    port = command[command.index("--port") + 1]
    # The database URL (with the password) comes from the environment, not the command line.
    assert "--storage" not in command and not any("postgresql" in part for part in command)
    assert urlsplit(proxy["environment"]["LRSEARCH_STORAGE"]).scheme == "postgresql"
    assert proxy["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert [p.rsplit(":", 1)[1] for p in proxy["ports"]] == [port]
    assert f"'127.0.0.1', {port}" in " ".join(proxy["healthcheck"]["test"])
    assert "deploy" not in proxy and "profiles" not in proxy  # starts with the stack, on any host
    # What the compose file and the READMEs tell workers to use is where the proxy listens.
    texts = [(DOCKER / "compose.yaml").read_text(), (DOCKER / "README.md").read_text()]
    texts.append((ROOT / "README.md").read_text())
    for text in texts:
        for host, used in re.findall(r"grpc://(storage-proxy|db-host):(\d+)", text):
            assert used == port, f"grpc://{host}:{used}, but the proxy listens on {port}"
    assert all("grpc://storage-proxy:" in text for text in texts[:2])


def test_create_and_workers_agree_on_the_study(compose: dict[str, Any]) -> None:
    services = compose["services"]
    run = services["create"]["command"]
    assert run[0] == "run"
    study = run[run.index("--study-name") + 1]
    assert run[1] == f"studies/{study}.toml"
    assert (ROOT / run[1]).is_file()
    for name in ("worker", "worker-cpu"):
        command = services[name]["command"]
        assert command[0] == "worker"
        assert command[command.index("--study") + 1] == study, name


def test_every_study_file_is_named_after_its_file() -> None:
    # STUDY=<stem> runs studies/<stem>.toml as study <stem>; keep file names and study names equal.
    for path in sorted((ROOT / "studies").glob("*.toml")):
        assert tomllib.loads(path.read_text())["study"]["name"] == path.stem, path.name


def _postgres_url_parts(url: str) -> tuple[str | None, str | None, str]:
    parts = urlsplit(url)
    assert parts.scheme.split("+")[0] == "postgresql", url
    return parts.username, parts.password, parts.path.lstrip("/")


def test_storage_urls_match_the_postgres_service(compose: dict[str, Any]) -> None:
    pg = compose["services"]["postgres"]["environment"]
    expected = (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
    for name, s in _lrsearch_services(compose).items():
        url = s["environment"]["LRSEARCH_STORAGE"]
        parts = urlsplit(url)
        assert (parts.hostname, parts.port) == ("postgres", 5432), name
        assert _postgres_url_parts(url) == (*expected, pg["POSTGRES_DB"]), name
        # The URL (and its password) travels in the environment, never on the command line.
        assert "--storage" not in s["command"], name
        assert not any("postgresql" in part for part in s["command"]), name
        assert "MLFLOW_TRACKING_URI" not in s["environment"], name
    mlflow_url = compose["services"]["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    user, password, database = _postgres_url_parts(mlflow_url)
    assert (user, password) == expected
    init_sql = " ".join(p.read_text() for p in (DOCKER / "initdb").glob("*.sql"))
    assert re.search(rf"CREATE DATABASE \"?{database}\"?\s*;", init_sql, re.IGNORECASE), database
    assert database != pg["POSTGRES_DB"]


def test_lrsearch_reads_the_storage_url_from_its_environment(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lrsearch.storage import default_storage

    url = compose["services"]["create"]["environment"]["LRSEARCH_STORAGE"]
    monkeypatch.setenv("LRSEARCH_STORAGE", url)
    assert default_storage() == url


def test_postgres_urls_have_a_driver_that_lrsearch_installs(compose: dict[str, Any]) -> None:
    from sqlalchemy.engine import make_url

    # The image installs pyproject.toml's dependencies (not this environment's metadata).
    url = compose["services"]["create"]["environment"]["LRSEARCH_STORAGE"]
    driver = make_url(url).get_dialect().driver
    distribution = {"psycopg": "psycopg", "psycopg2": "psycopg2-binary"}[driver]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [re.split(r"[\[<>=;\s]", r)[0] for r in project["dependencies"]]
    assert distribution in declared, f"{url.partition(':')[0]}:// needs {distribution}"


def test_tracking_uri_reaches_the_mlflow_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    run = services["create"]["command"]
    uri = urlsplit(run[run.index("--tracking-uri") + 1])
    mlflow = services["mlflow"]
    assert uri.scheme == "http"
    assert uri.hostname == "mlflow"
    assert str(uri.port) == mlflow["command"][mlflow["command"].index("--port") + 1]
    # MLflow answers only Host headers it allows (DNS-rebinding protection).
    allowed = mlflow["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert any(fnmatch.fnmatch(uri.netloc, pattern) for pattern in allowed), allowed
    assert any(fnmatch.fnmatch("localhost:5000", pattern) for pattern in allowed), allowed


def test_every_variable_has_one_default_and_is_in_env_example(raw: dict[str, Any]) -> None:
    defaults: dict[str, set[str]] = {}
    for name, op, arg in _variables(raw):
        assert op in (":-", "-"), f"${{{name}}} has no default; compose would run with ''"
        defaults.setdefault(name, set()).add(arg or "")
    for name, values in defaults.items():
        assert len(values) == 1, f"${{{name}}} has different defaults: {sorted(values)}"
    example = _env_example()
    assert set(example) == set(defaults), (
        "docker/.env.example and compose.yaml list other variables"
    )
    for name, (value,) in defaults.items():
        if name == "POSTGRES_PASSWORD":
            assert example[name] != value, ".env.example should not suggest the default password"
        else:
            assert example[name] == value, (
                f".env.example says {name}={example[name]}, compose {value}"
            )


def test_compose_builds_from_the_repository(compose: dict[str, Any]) -> None:
    args = {a.split("=")[0] for i, a in _instructions() if i == "ARG"}
    for name, s in compose["services"].items():
        if "build" not in s:
            continue
        assert (DOCKER / s["build"]["context"]).resolve() == ROOT, name
        assert (ROOT / s["build"]["dockerfile"]) == DOCKER / "Dockerfile", name
        assert set(s["build"]["args"]) <= args, name
        # Never pull a same-named image from a registry instead of building this checkout.
        assert s["pull_policy"] == "build", name
        assert s["build"]["args"]["TORCH_INDEX_URL"] in ("", CPU_INDEX)


# --- docker/README.md -----------------------------------------------------------------------


def _shell_commands(line: str) -> list[list[str]]:
    """Simple commands of one shell line, split at ``&&``, ``|``, ``;`` and redirections."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set("&|;<>()"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def _documented_commands(text: str, services: set[str]) -> list[list[str]]:
    """lrsearch argument lists in a document's bash blocks: ``lrsearch ...`` and
    ``docker compose run [flags] SERVICE ...`` for a service running the lrsearch entrypoint."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            for command in _shell_commands(line):
                start = 0
                while start < len(command) and re.match(r"[A-Za-z_]\w*=", command[start]):
                    start += 1  # VAR=value prefixes
                tokens = command[start:]
                if tokens[:1] == ["lrsearch"]:
                    found.append(tokens[1:])
                elif tokens[:2] == ["docker", "compose"] and "run" in tokens:
                    rest = tokens[tokens.index("run") + 1 :]
                    while rest and rest[0].startswith("-"):
                        rest = rest[1:]  # value-less flags only (--rm, --no-deps)
                    if rest and rest[0] in services:
                        found.append(rest[1:])
    return found


def test_commands_in_docker_readme_exist_in_the_cli(compose: dict[str, Any]) -> None:
    text = (DOCKER / "README.md").read_text()
    commands = _documented_commands(text, set(_lrsearch_services(compose)))
    assert commands, "docker/README.md shows no lrsearch command"
    for args in commands:
        _check_against_cli(args, "docker/README.md")


def test_commands_in_readme_exist_in_the_cli(compose: dict[str, Any]) -> None:
    # Covers the README's "Scale out" (and any other bash block that runs lrsearch).
    text = (ROOT / "README.md").read_text()
    for args in _documented_commands(text, set(_lrsearch_services(compose))):
        _check_against_cli(args, "README.md")


# --- Dockerfile -----------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/Dockerfile, continuation lines joined."""
    text = (DOCKER / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.strip().partition(" ") for line in joined.splitlines())
        if word
    ]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = [[]]
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def _arg_default(name: str) -> str:
    values = [
        a.partition("=")[2] for i, a in _instructions() if i == "ARG" and a.startswith(f"{name}=")
    ]
    assert len(values) == 1, f"ARG {name} should be declared once with a default"
    return values[0]


def test_dockerfile_base_image_is_a_build_arg() -> None:
    preamble, *stages = _stages()
    assert ("ARG", "BASE_IMAGE=python:3.11-slim") in preamble
    assert stages[0][0] == ("FROM", "${BASE_IMAGE} AS base")
    for stage in stages[1:]:
        assert stage[0][1].startswith("base AS "), stage[0]


def test_dockerfile_installs_pinned_torch_before_the_package() -> None:
    runs = [a for i, a in _instructions() if i == "RUN"]
    torch = next(k for k, r in enumerate(runs) if '"torch==${TORCH_VERSION}"' in r)
    package = next(k for k, r in enumerate(runs) if re.search(r"pip install \.(\s|$)", r))
    assert torch < package
    assert '${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}' in runs[torch]
    assert _arg_default("TORCH_INDEX_URL") == CPU_INDEX
    # The same pin as the Makefile's TORCH_SPEC.
    spec = re.search(r"^TORCH_SPEC \?= torch==(\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert spec is not None
    assert _arg_default("TORCH_VERSION") == spec.group(1)


def test_dockerfile_runtime_stage() -> None:
    runtime = _stages()[-1]
    by = {}
    for instruction, args in runtime:
        by.setdefault(instruction, []).append(args)
    assert json.loads(by["ENTRYPOINT"][-1]) == ["lrsearch"]
    assert by["USER"][-1] not in ("root", "0")
    assert "LRSEARCH_HOME=/data" in " ".join(by["ENV"]).split()
    # Compose runs `run studies/NAME.toml`, relative to the working directory.
    assert by["WORKDIR"][-1].startswith("/")
    assert any(re.fullmatch(r"(--\S+ )*studies (\./)?studies/?", c) for c in by["COPY"]), by["COPY"]
    assert json.loads(by["CMD"][-1]) == ["--help"]
    # Volumes mounted at /data and /mlartifacts start out owned by the runtime user.
    setup = " ".join(by["RUN"])
    assert re.search(r"chown -R \S+ [^&]*/data", setup)
    assert re.search(r"chown -R \S+ [^&]*/mlartifacts", setup)


def test_dockerfile_copies_only_what_the_context_keeps() -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for instruction, args in _instructions():
        if instruction != "COPY" or "--from=" in args:
            continue
        *sources, _ = [a for a in args.split() if not a.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not any(fnmatch.fnmatch(source, p.removeprefix("**/")) for p in ignored), source
    for heavy in (".venv", ".git"):
        assert heavy in ignored


def test_dockerfile_lint() -> None:
    """A few hadolint rules, by hand."""
    instructions = _instructions()
    kinds = [i for i, _ in instructions]
    assert "ADD" not in kinds  # DL3020: COPY for local files
    for instruction, args in instructions:
        if instruction in ("ENTRYPOINT", "CMD"):
            json.loads(args)  # DL3025: exec form, so signals reach lrsearch
        if instruction == "WORKDIR":
            assert args.startswith("/")  # DL3000
        if instruction == "FROM":
            assert ":latest" not in args  # DL3007
        if instruction != "RUN":
            continue
        assert "sudo" not in args.split()  # DL3004
        if "apt-get install" in args:
            assert "--no-install-recommends" in args  # DL3015
            assert "rm -rf /var/lib/apt/lists/*" in args  # DL3009
        if "pip install" in args:
            assert "--no-cache-dir" in args or "--mount=type=cache" in args  # DL3042
