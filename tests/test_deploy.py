"""The deployment files keep to what the code and the README say.

deploy/Dockerfile, deploy/compose.yaml, the systemd units and docs/remote-workers.md
are read by people and by Docker and systemd, never by the test suite's other tests,
so nothing else would notice when they drift: a subcommand renamed, a setting that
no longer exists, a compose file that lost its GPU reservation. These tests read
them as the tools do (YAML, Dockerfile instructions, systemd-analyze) and compare
them with `cli.main.build_parser()`, `artbot.config.Settings`, scripts/setup.sh and
the README.

Remote workers (issue 15): `artbot worker --connect`, `artbot dispatch` and
`artbot workers` are added to the parser with the worker.remote code. Until then the
tests that run those commands fail, on purpose, saying which subcommand or option is
missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from artbot import config
from artbot.config import ENV_PREFIX, Settings, masked_url

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
UNITS = [DEPLOY / "artbot.service", DEPLOY / "artbot-worker.service"]
README = ROOT / "README.md"
REMOTE_DOC = ROOT / "docs" / "remote-workers.md"
SETUP = ROOT / "scripts" / "setup.sh"

# The services of compose.yaml that run the artbot image (the rest run others').
ARTBOT_SERVICES = ("bot", "worker")


# -- reading the files as their tools do ---------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def service_env(service: dict) -> dict[str, str]:
    """A compose service's `environment:`, as a mapping (compose takes a list too)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def service_mounts(service: dict) -> dict[str, str]:
    """Container path -> source of a compose service's `volumes:` (short syntax)."""
    mounts = {}
    for item in service.get("volumes") or []:
        source, target = item.split(":")[:2]
        mounts[target] = source
    return mounts


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, as Docker reads it: comment lines
    dropped (inside continued lines too) and backslash-continued lines joined."""
    out, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined = (pending + line).strip()
        pending = ""
        word, _, rest = joined.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def dockerfile_env() -> dict[str, str]:
    """The ENV values the image sets (`ENV A=1 B=2`, continued over lines)."""
    env = {}
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def unit_values(path: Path, key: str) -> list[str]:
    """Every `key=value` of a systemd unit, in order (comments left out)."""
    values = []
    for line in path.read_text().splitlines():
        if not line.lstrip().startswith(("#", ";")) and line.startswith(key + "="):
            values.append(line[len(key) + 1:].strip())
    return values


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """The `artbot` subcommands the parser has now, by name."""
    from cli.main import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def readme_commands() -> dict[str, list[str]]:
    """The `artbot SUBCOMMAND ...` command lines the README shows (in code blocks and
    `inline code`), by subcommand: a word is a command where it starts the line or
    follows `&&`, `;`, `|` or VAR=value assignments, as a shell reads it."""
    text = README.read_text()
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, re.S)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    shown: dict[str, list[str]] = {}
    for line in "\n".join(blocks + inline).splitlines():
        words = line.split()
        for i, word in enumerate(words):
            if word != "artbot" and not word.endswith("/bin/artbot"):
                continue
            before = words[:i]
            while before and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", before[-1]):
                before.pop()  # DISCORD_TOKEN=... artbot run
            if (not before or before[-1] in ("&&", ";", "|", "$")) and i + 1 < len(words):
                shown.setdefault(words[i + 1], []).append(" ".join(words[i + 1:]))
    return shown


def deployed_commands() -> list[tuple[str, list[str]]]:
    """(where, argv after `artbot`) of every artbot command the deploy files run."""
    found = []
    for name, service in compose()["services"].items():
        if name in ARTBOT_SERVICES:
            command = service["command"]
            argv = shlex.split(command) if isinstance(command, str) else list(command)
            found.append((f"compose.yaml service {name}", [str(a) for a in argv]))
    for unit in UNITS:
        for line in unit_values(unit, "ExecStart"):
            program, *argv = shlex.split(line)
            assert program.endswith("/.venv/bin/artbot"), f"{unit.name}: ExecStart runs {program}"
            found.append((unit.name, argv))
    return found


# -- compose.yaml ---------------------------------------------------------------


def test_compose_has_redis_bot_and_worker():
    services = compose()["services"]
    assert set(services) >= {"redis", "bot", "worker"}
    assert str(services["redis"]["image"]).startswith("redis:7")
    # Redis holds nothing that matters and is for compose's own network only.
    assert "ports" not in services["redis"]
    for name in ARTBOT_SERVICES:
        build = services[name]["build"]
        assert build["context"] == ".."  # the repository root, seen from deploy/
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_bot_hands_jobs_to_the_worker_through_redis():
    services = compose()["services"]
    bot = service_env(services["bot"])
    assert bot["ARTBOT_REDIS_URL"] == "redis://redis:6379"
    assert bot["ARTBOT_LOCAL_WORKER"] == "false"
    # The token comes from the host's environment, and compose refuses to start without it.
    assert bot["DISCORD_TOKEN"].startswith("${DISCORD_TOKEN:?")
    assert services["worker"]["command"][:3] == ["worker", "--connect", "redis://redis:6379"]
    for name in ARTBOT_SERVICES:
        url = service_env(services[name]).get("ARTBOT_REDIS_URL")
        assert url is None or masked_url(url) == url, f"{name}: a password in ARTBOT_REDIS_URL"


def test_compose_worker_has_the_gpus_and_no_discord_token():
    worker = compose()["services"]["worker"]
    assert "DISCORD_TOKEN" not in service_env(worker)
    assert "env_file" not in worker
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]} in devices


def test_compose_volumes_keep_the_data_and_the_model_cache():
    doc = compose()
    services, named = doc["services"], set(doc.get("volumes") or {})
    image_env = dockerfile_env()
    data_dir, hf_home = image_env["ARTBOT_DATA_DIR"], image_env["HF_HOME"]

    def volume_holding(service: dict, path: str) -> str:
        """The named volume mounted at `path` or at a folder above it."""
        for target, source in service_mounts(service).items():
            if path == target or path.startswith(target.rstrip("/") + "/"):
                assert source in named, f"{source} (at {target}) is not a named volume"
                return source
        pytest.fail(f"nothing is mounted at {path}")

    bot_data = volume_holding(services["bot"], data_dir)
    scratch = volume_holding(services["worker"], data_dir)
    volume_holding(services["worker"], hf_home)
    assert scratch != bot_data, "the worker's scratch space must not be the bot's database"


# -- Dockerfile -------------------------------------------------------------------


def test_dockerfile_base_user_entrypoint_and_paths():
    instructions = dockerfile_instructions()
    words = [w for w, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    env = dockerfile_env()
    assert env["ARTBOT_DATA_DIR"] == "/data"
    assert env["HF_HOME"].startswith("/")
    # It runs as a non-root user from the last USER on, and nothing runs after as root.
    users = [rest for w, rest in instructions if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # By number (hadolint DL3066), the one the image's useradd gives its user.
    useradd = next(rest for w, rest in instructions if w == "RUN" and "useradd" in rest)
    assert re.search(r"--uid (\d+)", useradd).group(1) == users[-1].split(":")[0]
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN")
    assert dict(instructions)["ENTRYPOINT"] == '["/app/.venv/bin/artbot"]'
    # No secret is baked into the image.
    for word, rest in instructions:
        if word in ("ENV", "ARG"):
            assert "DISCORD_TOKEN" not in rest and "REDIS_PASSWORD" not in rest


def test_dockerfile_installs_with_the_readme_set_up_command():
    readme_setup = README.read_text().split("## Set up and test", 1)[1].split("```sh\n", 1)[1]
    first_command = readme_setup.splitlines()[0].split("#")[0].strip()
    assert first_command == "scripts/setup.sh"
    installs = [rest for w, rest in dockerfile_instructions() if w == "RUN" and "setup.sh" in rest]
    assert len(installs) == 1
    # RUN's own flags (--mount=...) are Docker's; what runs must be the README's command.
    command = " ".join(w for w in installs[0].split() if not w.startswith("--mount="))
    assert command == first_command


def test_dockerfile_copies_what_the_install_needs():
    copied = set()
    for word, rest in dockerfile_instructions():
        if word == "COPY":
            copied.update(p.rstrip("/") for p in rest.split()[:-1] if not p.startswith("--"))
    pyproject = (ROOT / "pyproject.toml").read_text()
    include = re.search(r"include = \[(.*?)\]", pyproject).group(1)
    packages = {name.rstrip("*") for name in re.findall(r'"([^"]+)"', include)}
    assert packages, "pyproject.toml's packages.find include list was not found"
    missing = (packages | {"pyproject.toml", "README.md", "constraints.txt", "scripts"}) - copied
    assert not missing, f"the Dockerfile does not COPY {sorted(missing)}"


def test_dockerfile_build_commands_match_setup_sh():
    """The two `docker build` lines at the top pass the torch build that setup.sh
    would install: its default for CUDA, the same version's +cpu build for CPU."""
    default = re.search(r"ARTBOT_TORCH_SPEC:-([^}]+)}", SETUP.read_text()).group(1)
    header = DOCKERFILE.read_text().split("\nFROM ", 1)[0]
    assert "docker build -f deploy/Dockerfile -t artbot:cuda ." in header
    assert f"--build-arg ARTBOT_TORCH_SPEC={default}+cpu" in header
    assert "--build-arg ARTBOT_TORCH_INDEX=https://download.pytorch.org/whl/cpu" in header
    args = {rest.split("=")[0] for w, rest in dockerfile_instructions() if w == "ARG"}
    assert args == {"ARTBOT_TORCH_SPEC", "ARTBOT_TORCH_INDEX"}


class _Healthz(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ok": true}')

    def log_message(self, *args):
        pass


def test_dockerfile_healthcheck_asks_healthz():
    """The HEALTHCHECK's own command, run as Docker runs it (this checkout's .venv python
    standing in for the image's), against a /healthz on this machine's loopback: healthy
    on 200, unhealthy on 503 or nothing listening, and healthy (no check) with
    ARTBOT_METRICS_PORT unset."""
    (check,) = [rest for w, rest in dockerfile_instructions() if w == "HEALTHCHECK"]
    command = check.split(" CMD ", 1)[1].strip()
    # Exec form (a JSON list, as hadolint asks) runs as it is; shell form through sh.
    argv = json.loads(command) if command.startswith("[") else ["sh", "-c", command]
    if argv[0] == "/app/.venv/bin/python":
        argv[0] = sys.executable
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTBOT_METRICS")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

    def healthy(**extra) -> bool:
        run = subprocess.run(argv, env={**env, **extra}, capture_output=True, timeout=30)
        return run.returncode == 0

    assert healthy()
    for status, want in ((200, True), (503, False)):
        handler = type("Handler", (_Healthz,), {"status": status})
        server = http.server.HTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            port = str(server.server_address[1])
            assert healthy(ARTBOT_METRICS_PORT=port) is want
            assert healthy(ARTBOT_METRICS_PORT=port, ARTBOT_METRICS_HOST="0.0.0.0") is want
        finally:
            server.shutdown()
            server.server_close()
    assert not healthy(ARTBOT_METRICS_PORT=port)  # that server is gone now


# -- the commands they run ---------------------------------------------------------


@pytest.mark.parametrize("where,argv", deployed_commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_deployed_commands_are_the_readme_commands(where, argv):
    """Each artbot command a deploy file runs is one the README shows (subcommand and
    options) and one the parser takes. `worker --connect` is added to the parser with
    the remote workers (issue 15); until then this fails for it."""
    sub, options = argv[0], [a.split("=")[0] for a in argv[1:] if a.startswith("--")]
    shown = readme_commands().get(sub, [])
    assert shown, f"{where}: the README shows no `artbot {sub}`"
    for option in options:
        assert any(option in line.split() for line in shown), \
            f"{where}: the README shows no `artbot {sub} {option}`"
    known = subcommands()
    assert sub in known, f"{where}: `artbot {sub}` is not in cli.main.build_parser() yet"
    try:
        known[sub].parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"{where}: `artbot {' '.join(argv)}` does not parse")


def test_readme_and_docs_name_only_real_subcommands():
    """Every `artbot SUBCOMMAND` the README shows exists. `dispatch` and `workers` come
    with the remote workers (issue 15); until then this fails naming them."""
    missing = sorted(set(readme_commands()) - set(subcommands()))
    assert not missing, f"the README shows subcommands the parser lacks: {missing}"


# -- settings ---------------------------------------------------------------------


def known_variables() -> set[str]:
    """Every ARTBOT_* name something reads: the settings (field names upper-cased with
    ARTBOT_, and config's aliases), ARTBOT_CONFIG (the settings file), the few the code
    reads itself, and scripts/setup.sh's build choices."""
    names = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    names |= set(config._ENV_ALIASES)
    # Read outside Settings: the variable -> the file that reads it.
    read_directly = {
        "ARTBOT_CONFIG": "artbot/config.py",
        "ARTBOT_CACHE": "generators/datasets.py",
        "ARTBOT_OFFLINE": "generators/diffusion/checkpoints.py",
    }
    for name, path in read_directly.items():
        assert f'"{name}"' in (ROOT / path).read_text(), f"{path} no longer reads {name}"
    names |= set(read_directly)
    names |= set(re.findall(r"\b(ARTBOT_[A-Z0-9_]+)", SETUP.read_text()))
    return names


@pytest.mark.parametrize("path", [DOCKERFILE, COMPOSE, *UNITS, REMOTE_DOC], ids=lambda p: p.name)
def test_every_artbot_variable_is_a_real_setting(path):
    """Every ARTBOT_* a deploy file sets (or its comments suggest) is read by artbot."""
    used = set(re.findall(r"\b(ARTBOT_[A-Z0-9_]+)", path.read_text()))
    unknown = sorted(used - known_variables())
    assert not unknown, f"{path.name} names variables artbot does not read: {unknown}"


# -- systemd units --------------------------------------------------------------------


def test_worker_unit_runs_a_worker_that_restarts_and_hands_its_job_back():
    unit = DEPLOY / "artbot-worker.service"
    assert unit_values(unit, "EnvironmentFile")
    assert unit_values(unit, "Restart") == ["always"]
    assert unit_values(unit, "RestartSec")
    assert unit_values(unit, "KillSignal") == ["SIGTERM"]
    assert shlex.split(unit_values(unit, "ExecStart")[0])[1:2] == ["worker"]
    text = unit.read_text()
    assert "DISCORD_TOKEN" not in text
    # The password is for the environment file, never the unit or the command line.
    assert not any("PASSWORD" in v for v in unit_values(unit, "Environment"))
    assert "PASSWORD" not in unit_values(unit, "ExecStart")[0]


ARTBOT_BIN = Path(sys.executable).parent / "artbot"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.skipif(not ARTBOT_BIN.exists(), reason="no .venv/bin/artbot to stand in")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_units_verify(unit, tmp_path):
    """systemd-analyze verify reads the unit as systemd would. It checks that ExecStart's
    program exists, so this checkout's .venv/bin/artbot stands in for /srv/artbot's;
    it reports unknown keys and bad values as warnings, so any output fails."""
    (program,) = {shlex.split(v)[0] for v in unit_values(unit, "ExecStart")}
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace(program, str(ARTBOT_BIN)))
    run = subprocess.run(["systemd-analyze", "verify", str(copy)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and not (run.stdout + run.stderr).strip(), run.stdout + run.stderr
