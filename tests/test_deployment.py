"""Deployment files: the Docker images and compose file, the cluster examples, and the
operator's guide's database recipes (auth, TLS, backup and restore) on the real server.

These tests need no Docker engine: the compose files are checked with ``docker compose
config`` (the Compose v2 CLI needs no engine; ``docker/dev-tools.sh`` installs it), the
Dockerfile with hadolint, and the images' commands against this package's own console
scripts and CLI parser. Building the images and running a campaign in compose is
``make docker-check`` (scripts/docker-check.sh), which CI runs after the test suite.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import types
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
CLUSTERS = ROOT / "examples" / "clusters"
TOOLS_BIN = Path(os.environ.get("NFT_FW_TOOLS", Path.home() / ".cache" / "nft-fw-tools")) / "bin"
# Run tools with a bare environment so a developer's shell cannot change what is checked.
BARE_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(Path.home())}


# ---------------------------------------------------------------- helpers


def _compose_command() -> list[str] | None:
    """``docker compose`` (v2 plugin) or the v2 binary docker/dev-tools.sh installs."""
    candidates: list[list[str]] = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if (TOOLS_BIN / "docker-compose").exists():
        candidates.append([str(TOOLS_BIN / "docker-compose")])
    for cmd in candidates:
        out = subprocess.run(
            [*cmd, "version"], capture_output=True, text=True, env=BARE_ENV, check=False
        )
        if out.returncode == 0 and "version v2" in out.stdout:
            return cmd
    return None


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = _compose_command()
    if cmd is None:
        pytest.skip("no Docker Compose v2 CLI here; bash docker/dev-tools.sh installs one")
    return subprocess.run(
        [*cmd, *args], cwd=ROOT, capture_output=True, text=True, env=BARE_ENV, timeout=60
    )


def _compose_yaml() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _interpolate_defaults(value: str) -> str:
    """``${VAR:-default}`` → default, as compose resolves it with VAR unset."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def _dockerfile_instructions() -> list[tuple[str, str, str]]:
    """(stage, instruction, arguments) of docker/Dockerfile, continuation lines joined."""
    text = (DOCKER / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    out, stage = [], ""
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction == "FROM":
            stage = rest.split(" AS ")[-1].strip() if " AS " in rest else rest
        out.append((stage, instruction, rest.strip()))
    return out


def _exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form CMD/ENTRYPOINT/HEALTHCHECK CMD."""
    start = args.index("[")
    value = json.loads(args[start:])
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def _console_scripts() -> set[str]:
    return {ep.name for ep in importlib.metadata.entry_points(group="console_scripts")}


def _load_entrypoint() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        "nft_fw_docker_entrypoint", DOCKER / "entrypoint.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_nft_fw_command(argv: list[str]) -> None:
    """``argv`` is an nft-fw command line this package's parser accepts."""
    from nft_fw.cli import build_parser

    assert argv[0] == "nft-fw", argv
    args = build_parser().parse_args(argv[1:])  # SystemExit (test error) on unknown flags
    assert callable(args.func)


# ---------------------------------------------------------------- compose


def test_compose_file_parses_without_an_engine() -> None:
    out = _compose("-f", "docker/compose.yaml", "config", "--quiet")
    assert out.returncode == 0, out.stderr


def test_compose_services_volumes_auth_and_healthchecks() -> None:
    out = _compose(
        "-f", "docker/compose.yaml", "--env-file", "docker/.env.example",
        "config", "--format", "json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    cfg = json.loads(out.stdout)
    services = cfg["services"]
    assert set(services) == {"mongo", "trainer", "label-worker"}
    mongo = services["mongo"]
    assert mongo["image"].startswith("mongo:")
    assert "--auth" in mongo["command"]
    assert {"MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD"} <= set(mongo["environment"])
    data = [v for v in mongo["volumes"] if v["target"] == "/data/db"]
    assert data and data[0]["type"] == "volume" and data[0]["source"] == "mongo-data"
    assert "mongo-data" in cfg["volumes"]
    assert [p["host_ip"] for p in mongo["ports"]] == ["127.0.0.1"]  # not open by default
    init = [v for v in mongo["volumes"] if v["target"].startswith("/docker-entrypoint-initdb.d/")]
    assert init and Path(init[0]["source"]) == DOCKER / "mongo-init.js"
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
    for name, category in (("trainer", "train"), ("label-worker", "label")):
        service = services[name]
        assert service["depends_on"]["mongo"]["condition"] == "service_healthy"
        command = service["command"]
        assert command[command.index("--category") + 1] == category
        assert service["environment"]["NFT_FW_DB_HOST"] == "mongo:27017"
        assert "NFT_FW_DB_PASSWORD" in service["environment"]
        assert "container_name" not in service  # --scale needs generated names
        assert service["init"] is True  # `compose stop` reaches the worker, not a deaf PID 1
    assert services["label-worker"]["deploy"]["replicas"] == 2
    assert services["trainer"]["build"]["target"] == "trainer"
    assert services["label-worker"]["build"]["target"] == "worker"
    # the example campaigns are mounted for `nft-fw submit /campaigns/...`
    mounts = {v["target"]: v for v in services["trainer"]["volumes"]}
    assert (Path(mounts["/campaigns"]["source"]) / "pt260-emt.yaml").is_file()


def test_compose_gpu_override_reserves_a_gpu_and_builds_jax_with_cuda() -> None:
    out = _compose(
        "-f", "docker/compose.yaml", "-f", "docker/compose.gpu.yaml",
        "--env-file", "docker/.env.example", "config", "--format", "json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    trainer = json.loads(out.stdout)["services"]["trainer"]
    assert trainer["build"]["args"]["JAX_EXTRA"] == "cuda12"
    (device,) = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_compose_embedded_db_override_swaps_only_the_database() -> None:
    """compose.embedded-db.yaml: the database service runs the Dockerfile's db target (the
    embedded server with a login) under the same name, volume and port; the workers keep
    their settings and connect directly (the server advertises its listen address)."""
    files = ["-f", "docker/compose.yaml", "-f", "docker/compose.embedded-db.yaml"]
    out = _compose(*files, "--env-file", "docker/.env.example", "config", "--format", "json")
    assert out.returncode == 0, out.stderr
    cfg = json.loads(out.stdout)
    plain = json.loads(
        _compose(
            "-f", "docker/compose.yaml", "--env-file", "docker/.env.example",
            "config", "--format", "json",
        ).stdout
    )  # fmt: skip
    services = cfg["services"]
    assert set(services) == {"mongo", "trainer", "label-worker"}
    db = services["mongo"]
    assert db["image"].startswith("nft-fw-db:") and db["build"]["target"] == "db"
    _assert_nft_fw_command(db["command"])
    command = db["command"]
    assert {"--foreground", "--auth"} <= set(command)
    assert command[command.index("--port") + 1] == "27017"
    assert command[command.index("--data-dir") + 1] == "/data/db"
    assert [(v["source"], v["target"]) for v in db["volumes"]] == [("mongo-data", "/data/db")]
    assert not any(k.startswith("MONGO_") for k in db["environment"])  # no root user here
    assert db["environment"]["NFT_FW_DB_HOST"] == "127.0.0.1:27017"  # the healthcheck's login
    assert db["healthcheck"]["test"] == ["CMD", "nft-fw-entrypoint", "--ping"]
    assert db["ports"] == plain["services"]["mongo"]["ports"]
    for name in ("trainer", "label-worker"):
        env = services[name]["environment"]
        assert env.pop("NFT_FW_DB_OPTIONS") == "directConnection=true"
        assert env == plain["services"][name]["environment"]
        assert services[name]["depends_on"] == plain["services"][name]["depends_on"]
        assert services[name]["command"] == plain["services"][name]["command"]


def test_compose_commands_exist_in_the_package() -> None:
    scripts = _console_scripts()
    for name, service in _compose_yaml()["services"].items():
        if "build" not in service:
            continue  # the mongo image's own commands
        command = [_interpolate_defaults(c) for c in service["command"]]
        assert command[0] in scripts, (name, command)
        _assert_nft_fw_command(command)
        assert service["healthcheck"]["test"] == ["CMD", "nft-fw-entrypoint", "--ping"]


def test_env_example_sets_every_variable_compose_uses_and_no_password() -> None:
    text = "".join(
        (DOCKER / name).read_text()
        for name in ("compose.yaml", "compose.gpu.yaml", "compose.embedded-db.yaml")
    )
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = dict(
        line.split("=", 1)
        for line in (DOCKER / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert used <= set(example), used - set(example)
    assert example["MONGO_ROOT_PASSWORD"] == "" and example["NFT_FW_DB_PASSWORD"] == ""
    assert ".env" in (DOCKER / ".gitignore").read_text().split()


def test_docker_check_campaign_is_valid_and_small() -> None:
    """make docker-check's campaign (docker/check/p79-emt.yaml): valid, EMT, a few rounds."""
    from nft_fw.spec.campaign import load_campaign

    spec = load_campaign(DOCKER / "check" / "p79-emt.yaml")
    assert spec.name == "p79-emt" and spec.parent.name == "emt"
    assert spec.nft.max_iterations <= 2 and spec.model.ensemble_size <= 4


# ---------------------------------------------------------------- Dockerfile


def test_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint") or (
        str(TOOLS_BIN / "hadolint") if (TOOLS_BIN / "hadolint").exists() else None
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed; bash docker/dev-tools.sh installs it")
    out = subprocess.run(
        [hadolint, "--no-color", "docker/Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _copy_sources(rest: str) -> list[str]:
    """The sources of a ``COPY [--flag=…] SRC… DEST``."""
    return [w for w in rest.split()[:-1] if not w.startswith("--")]


def _bind_sources(rest: str) -> list[str]:
    """The build-context paths a ``RUN --mount=type=bind,…`` mounts ("." for the whole)."""
    out = []
    for mount in re.findall(r"--mount=(\S+)", rest):
        opts = dict(o.split("=", 1) for o in mount.split(",") if "=" in o)
        if opts.get("type") == "bind" and "from" not in opts:
            out.append(opts.get("source", "."))
    return out


def test_image_commands_exist_in_the_package() -> None:
    instructions = _dockerfile_instructions()
    stages = {stage for stage, _, _ in instructions}
    assert {"base", "build", "worker", "trainer", "db"} <= stages
    scripts = _console_scripts()
    copied = {
        rest.split()[-1]: _copy_sources(rest)
        for _, ins, rest in instructions
        if ins == "COPY" and "--from" not in rest
    }
    assert copied["/usr/local/bin/nft-fw-entrypoint"] == ["docker/entrypoint.py"]
    commands = [(s, i, _exec_form(r)) for s, i, r in instructions if i in ("CMD", "ENTRYPOINT")]
    health = [
        (s, _exec_form(r.split(" CMD ", 1)[1])) for s, i, r in instructions if i == "HEALTHCHECK"
    ]
    assert {s for s, i, _ in commands if i == "CMD"} == {"worker", "trainer", "db"}
    entrypoints = [(s, argv) for s, i, argv in commands if i == "ENTRYPOINT"]
    # the trainer inherits the worker's; the database server needs no connection from it
    assert entrypoints == [("worker", ["nft-fw-entrypoint"]), ("db", [])]
    for stage, instruction, argv in commands:
        if instruction == "ENTRYPOINT":
            continue
        assert argv[0] in scripts, (stage, argv)
        _assert_nft_fw_command(argv)
    categories = {
        s: argv[argv.index("--category") + 1] for s, i, argv in commands if i == "CMD" and s != "db"
    }
    assert categories == {"worker": "label", "trainer": "train"}
    (db,) = [argv for s, i, argv in commands if i == "CMD" and s == "db"]
    assert db[:3] == ["nft-fw", "db", "start"] and {"--foreground", "--auth"} <= set(db)
    assert health == [("worker", ["nft-fw-entrypoint", "--ping"])]  # inherited by the others
    env = " ".join(r for s, i, r in instructions if i == "ENV" and s == "worker")
    assert "NFT_FW_LAUNCHPAD_FILE=/work/my_launchpad.yaml" in env  # `compose exec` reads it
    # BuildKit would fetch the frontend a "# syntax=" line names from Docker Hub
    assert not (DOCKER / "Dockerfile").read_text().startswith("# syntax")


def test_image_build_context_holds_what_the_dockerfile_copies() -> None:
    allowed = [
        line[1:]
        for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    sources = []
    for _, instruction, rest in _dockerfile_instructions():
        if instruction == "COPY" and "--from" not in rest:
            sources += _copy_sources(rest)
        elif instruction == "RUN":
            sources += _bind_sources(rest)
    assert "." in sources and "scripts/siteconfig.py" in sources
    for source in sources:
        if source == ".":  # the whole context: what `pip install /src` builds from
            needed = ["pyproject.toml", "README.md", "nft_fw", "launchpad", "firetasks",
                      "workflows"]  # fmt: skip
            assert all(n in allowed for n in needed), set(needed) - set(allowed)
            continue
        assert (ROOT / source).exists(), source
        assert any(source == a or source.startswith(a + "/") for a in allowed), source


def test_pyproject_installs_every_package_folder() -> None:
    """A non-editable install (the images, a user's ``pip install``) carries only the listed
    packages: a new sub-package missing from ``packages`` works in the checkout and breaks
    every installed ``nft-fw`` with ModuleNotFoundError."""
    import tomllib

    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    found = set()
    for name, folder in tool["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    assert found - listed == set(), f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert all((ROOT / tool["package-dir"].get(p, p.replace(".", "/"))).is_dir()
               for p in listed), listed  # fmt: skip


def test_images_install_the_tested_constraints() -> None:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pins = dict(ln.split("==") for ln in lines if "==" in ln and not ln.startswith("#"))
    text = (DOCKER / "Dockerfile").read_text()
    assert f'-c /src/constraints.txt "gpaw=={pins["gpaw"]}" numpy' in text
    assert "pip install /src -c /src/constraints.txt" in text
    assert f'jax[${{JAX_EXTRA}}]=={pins["jax"]}"' in text
    assert "!constraints.txt" in (DOCKER / "Dockerfile.dockerignore").read_text()
    assert "python:3.11-" in text  # requires-python = ">=3.11,<3.12"
    assert "CC=g++ GPAW_CONFIG=/src/scripts/siteconfig.py" in text  # as bootstrap.sh builds


# ---------------------------------------------------------------- entry point


def test_entrypoint_builds_a_quoted_uri_and_a_launchpad_file(tmp_path: Path) -> None:
    from fireworks import LaunchPad
    from pymongo import uri_parser

    ep = _load_entrypoint()
    ca = tmp_path / "ca.pem"  # pymongo checks that a CA file named in a URI is readable
    ca.write_text("")
    env = {
        "NFT_FW_DB_HOST": "db.example.org:27018",
        "NFT_FW_DB_USER": "nft",
        "NFT_FW_DB_PASSWORD": "p@ss:w/rd%?",
        "NFT_FW_DB_NAME": "campaigns",
        "NFT_FW_DB_TLS": "true",
        "NFT_FW_DB_TLS_CA_FILE": str(ca),
    }
    uri = ep.database_uri(env)
    parsed = uri_parser.parse_uri(uri)
    assert parsed["username"] == "nft" and parsed["password"] == "p@ss:w/rd%?"
    assert parsed["nodelist"] == [("db.example.org", 27018)] and parsed["database"] == "campaigns"
    options = {k.lower(): v for k, v in parsed["options"].items()}
    assert options["authsource"] == "admin" and options["retrywrites"] is False
    assert options["tls"] is True and options["tlscafile"] == str(ca)

    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    file_env = {"NFT_FW_DB_PASSWORD_FILE": str(secret)}
    assert uri_parser.parse_uri(ep.database_uri(file_env))["password"] == "from-a-file"
    given = "mongodb://u:p@h:1/x?retryWrites=false"
    assert ep.database_uri({"NFT_FW_MONGODB_URI": given, "NFT_FW_DB_PASSWORD": ""}) == given
    with pytest.raises(ep.ConfigError, match="NFT_FW_DB_PASSWORD"):
        ep.database_uri({"NFT_FW_DB_HOST": "mongo:27017"})
    direct = ep.database_uri(
        {"NFT_FW_DB_PASSWORD": "x", "NFT_FW_DB_OPTIONS": "directConnection=true&authSource=nft"}
    )
    options = {k.lower(): v for k, v in uri_parser.parse_uri(direct)["options"].items()}
    assert options["directconnection"] is True and options["authsource"] == "nft"
    assert options["retrywrites"] is False
    with pytest.raises(ep.ConfigError, match="NFT_FW_DB_OPTIONS"):
        ep.database_uri({"NFT_FW_DB_PASSWORD": "x", "NFT_FW_DB_OPTIONS": "directConnection"})

    path = ep.write_launchpad_file(given, tmp_path / "lp" / "my_launchpad.yaml")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lp = LaunchPad.from_file(str(path))  # FireWorks' own loader; the client connects lazily
    assert lp.uri_mode and lp.name == "x" and lp.mongoclient_kwargs == {"retryWrites": False}
    lp.connection.close()


def _entrypoint(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    venv_bin = str(Path(sys.executable).parent)
    full_env = {"PATH": f"{venv_bin}:/usr/bin:/bin", "HOME": str(cwd), **env}
    return subprocess.run(
        [sys.executable, str(DOCKER / "entrypoint.py"), *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.integration
def test_entrypoint_pings_and_runs_lpad_and_nft_fw_on_the_real_server(
    connection: Any, tmp_path: Path
) -> None:
    from fireworks import Firework, ScriptTask

    lp = connection.launchpad
    lp.add_wf(Firework(ScriptTask.from_str("true"), name="probe"))
    server = connection.server
    uri = f"mongodb://{server.host}:{server.port}/{connection.db_name}?retryWrites=false&directConnection=true"
    assert _entrypoint("--ping", env={"NFT_FW_MONGODB_URI": uri}, cwd=tmp_path).returncode == 0
    out = _entrypoint(
        "lpad", "get_fws", "-d", "count", env={"NFT_FW_MONGODB_URI": uri}, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "1"  # the launchpad file reached this database
    out = _entrypoint("nft-fw", "status", "--json", env={"NFT_FW_MONGODB_URI": uri}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []  # nft-fw read the same database through the URI

    from nft_fw.launchpad.server import free_port

    closed = f"mongodb://127.0.0.1:{free_port()}/x?directConnection=true"
    out = _entrypoint(
        "--ping", env={"NFT_FW_MONGODB_URI": closed, "NFT_FW_PING_TIMEOUT_S": "1"}, cwd=tmp_path
    )
    assert out.returncode == 1
    out = _entrypoint("nft-fw", "status", env={}, cwd=tmp_path)
    assert out.returncode == 2 and "NFT_FW_DB_PASSWORD" in out.stderr


# ---------------------------------------------------------------- cluster examples


def _rocket_launch(adapter: Any) -> list[str]:
    return shlex.split(adapter["rocket_launch"])


def test_cluster_examples_load_with_fireworks_loaders(tmp_path: Path) -> None:
    from fireworks import FWorker, LaunchPad
    from fireworks.queue.queue_adapter import QueueAdapterBase
    from fireworks.user_objects.queue_adapters.common_adapter import CommonAdapter

    fworkers = {p.name: FWorker.from_file(str(p)) for p in CLUSTERS.glob("my_fworker_*.yaml")}
    assert {n: w.category for n, w in fworkers.items()} == {
        "my_fworker_dft.yaml": ["dft", "label"],
        "my_fworker_label.yaml": "label",
        "my_fworker_train.yaml": "train",
    }
    assert len({w.name for w in fworkers.values()}) == 3
    for worker in fworkers.values():  # labels never go to trainers and vice versa
        cats = worker.category if isinstance(worker.category, list) else [worker.category]
        assert ("train" in cats) != bool({"label", "dft"} & set(cats))

    lp = LaunchPad.from_file(str(CLUSTERS / "my_launchpad.yaml"))
    assert lp.name == "nft_fw" and lp.authsource == "admin" and lp.username == "nft"
    assert lp.mongoclient_kwargs["retryWrites"] is False and lp.mongoclient_kwargs["tls"] is True
    lp.connection.close()

    # which FWorker each adapter's jobs use, and what they must take
    expected = {
        "my_qadapter_slurm.yaml": ("SLURM", "my_fworker_dft.yaml", "nft-fw"),
        "my_qadapter_slurm_offline.yaml": ("SLURM", "my_fworker_dft.yaml", "rlaunch"),
        "my_qadapter_slurm_gpu.yaml": ("SLURM", "train", "nft-fw"),
        "my_qadapter_pbs.yaml": ("PBS", "label", "nft-fw"),
        "my_qadapter_slurm_mpi.yaml": ("SLURM", "dft", "srun"),
    }
    adapters = sorted(CLUSTERS.glob("my_qadapter_*.yaml"))
    assert {p.name for p in adapters} == set(expected)
    for path in adapters:
        q_type, target, program = expected[path.name]
        adapter = CommonAdapter.from_file(str(path))
        assert isinstance(adapter, QueueAdapterBase)
        assert adapter.q_type == q_type
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # FireWorks warns about keys its template lacks
            script = adapter.get_script_str(str(tmp_path))
        argv = _rocket_launch(adapter)
        assert argv[0] == program and adapter["rocket_launch"] in script
        if program == "srun":  # every rank runs the worker; rank 0 is the FireWorks client
            assert "GPAW_MPI_BACKEND=cgpaw" in argv[1]
            argv = argv[2:]
        assert f"cd {tmp_path}" in script
        assert ("#SBATCH --partition=" if q_type == "SLURM" else "#PBS -q ") in script
        if program == "rlaunch":
            fworker = Path(argv[argv.index("-w") + 1]).name
            assert fworker == target and "singleshot" in argv
            assert ("--offline" in argv) == ("offline" in path.name)
            assert ("-l" in argv) != ("--offline" in argv)  # offline jobs get no database
        else:
            _assert_nft_fw_command(argv)
            if "--fworker" in argv:  # categories from the FWorker file, one launch per job
                assert Path(argv[argv.index("--fworker") + 1]).name == target
                assert "--category" not in argv and argv[argv.index("--max") + 1] == "1"
            else:
                assert argv[argv.index("--category") + 1] == target


# ---------------------------------------------------------------- database recipes


def _openssl_cert(directory: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = directory / "server.pem", directory / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def _nft_fw(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nft_fw", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.mark.integration
def test_guide_recipe_users_tls_backup_and_restore(tmp_path: Path) -> None:
    """docs/operators-guide.md: a SecantusDB server with users, TLS, a backup and a restore."""
    import pymongo
    from pymongo.errors import OperationFailure, PyMongoError

    from nft_fw.launchpad import server as srv
    from nft_fw.launchpad.connection import DatabaseConnectionError, open_connection
    from nft_fw.launchpad.records import LABELS

    cert, key = _openssl_cert(tmp_path)
    data = tmp_path / "db"
    port = srv.free_port()
    exe = str(Path(sys.executable).with_name("secantusd-py"))
    base = [exe, "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(data)]
    db_name = f"nft_{uuid.uuid4().hex[:8]}"
    procs: list[subprocess.Popen[bytes]] = []

    def start(*extra: str, tls: bool) -> pymongo.MongoClient:
        procs.append(subprocess.Popen([*base, "--log-level", "ERROR", *extra]))
        kwargs: dict[str, Any] = {"tls": True, "tlsCAFile": str(cert)} if tls else {}
        client: pymongo.MongoClient = pymongo.MongoClient(
            "127.0.0.1", port, directConnection=True, retryWrites=False,
            serverSelectionTimeoutMS=30_000, **kwargs,
        )  # fmt: skip
        client.admin.command("ping")
        return client

    def stop() -> None:
        proc = procs.pop()
        proc.terminate()
        proc.wait(timeout=60)

    try:
        # 1. provision the users on a server without --auth
        client = start(tls=False)
        client.admin.command("createUser", "admin", pwd="admin-secret", roles=["root"])
        client.admin.command(
            "createUser", "nft", pwd="p@ss:w/rd", roles=[{"role": "readWrite", "db": db_name}]
        )
        client.close()
        stop()
        # 2. restart with --auth and TLS; workers log in as nft with the CA bundle
        start("--auth", "--tls-cert-file", str(cert), "--tls-key-file", str(key), tls=True).close()
        ep = _load_entrypoint()
        uri = ep.database_uri(
            {
                "NFT_FW_DB_HOST": f"127.0.0.1:{port}",
                "NFT_FW_DB_NAME": db_name,
                "NFT_FW_DB_USER": "nft",
                "NFT_FW_DB_PASSWORD": "p@ss:w/rd",
                "NFT_FW_DB_TLS": "true",
                "NFT_FW_DB_TLS_CA_FILE": str(cert),
            }
        )
        out = _nft_fw("status", "--json", env={"NFT_FW_MONGODB_URI": uri})
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == []
        assert "p@ss" not in out.stdout + out.stderr
        nft = pymongo.MongoClient(uri, directConnection=True)
        nft[db_name][LABELS].insert_one({"campaign": "c", "hash": "h", "parent_hash": "p"})
        # examples/clusters/my_launchpad.yaml with this server's host, password and CA
        lp_yaml = yaml.safe_load((CLUSTERS / "my_launchpad.yaml").read_text())
        lp_yaml.update(host="localhost", port=port, name=db_name, password="p@ss:w/rd")
        lp_yaml["mongoclient_kwargs"].update(tlsCAFile=str(cert), directConnection=True)
        lp_file = tmp_path / "my_launchpad.yaml"
        lp_file.write_text(yaml.safe_dump(lp_yaml))
        from_file = open_connection(launchpad_file=lp_file)
        assert from_file.db[LABELS].count_documents({"campaign": "c"}) == 1
        from_file.close()
        with pytest.raises(OperationFailure):  # readWrite on its own database only
            nft["other"]["x"].insert_one({})
        with pytest.raises(OperationFailure):  # backups need the administrator
            nft.admin.command("secantusAdmin.backupArchive", outputPath=str(tmp_path / "no.tgz"))
        nft.close()
        plain = pymongo.MongoClient(
            "127.0.0.1", port, directConnection=True, serverSelectionTimeoutMS=500
        )
        with pytest.raises(PyMongoError):  # TLS is required
            plain.admin.command("ping")
        plain.close()
        with pytest.raises(DatabaseConnectionError) as refused:
            open_connection(uri=uri.replace("p%40ss%3Aw%2Frd", "Xq7-not-it"))
        assert "Xq7" not in str(refused.value)  # credentials never reach a message
        # 3. backup as the administrator, then restore into a new data directory
        admin = pymongo.MongoClient(
            f"mongodb://admin:admin-secret@127.0.0.1:{port}/?tls=true&tlsCAFile={cert}",
            directConnection=True,
        )
        archive = tmp_path / "backup.tar.gz"
        result = admin.admin.command("secantusAdmin.backupArchive", outputPath=str(archive))
        assert result["ok"] == 1.0 and archive.stat().st_size > 0
        admin.close()
        stop()
        restored = tmp_path / "restored" / "db"
        subprocess.run(
            [str(Path(sys.executable).with_name("secantus-restore-archive")),
             "--archive", str(archive), "--target-dir", str(restored)],
            check=True, capture_output=True,
        )  # fmt: skip
        base[base.index("--storage-path") + 1] = str(restored)
        start("--auth", tls=False).close()
        back = pymongo.MongoClient(
            f"mongodb://nft:p%40ss%3Aw%2Frd@127.0.0.1:{port}/{db_name}?authSource=admin",
            directConnection=True,
        )
        assert back[db_name][LABELS].count_documents({"campaign": "c"}) == 1  # users came back too
        back.close()
    finally:
        while procs:
            stop()


@pytest.mark.integration
def test_guide_monitoring_webgui_shows_the_fireworks_behind_a_password(
    connection: Any, tmp_path: Path
) -> None:
    """docs/operators-guide.md: ``lpad webgui -s`` with a user name and password."""
    import base64
    import time
    import urllib.error
    import urllib.request

    from fireworks import Firework, ScriptTask

    from nft_fw.launchpad.server import free_port

    connection.launchpad.add_wf(Firework(ScriptTask.from_str("true"), name="probe-firework"))
    port = free_port()
    gui = subprocess.Popen(
        [str(Path(sys.executable).with_name("lpad")), "-l", str(connection.lp_file), "webgui",
         "-s", "--host", "127.0.0.1", "--port", str(port),
         "--webgui_username", "ops", "--webgui_password", "gui-secret"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    request = urllib.request.Request(url)
    request.add_header("Authorization", "Basic " + base64.b64encode(b"ops:gui-secret").decode())
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    page = response.read().decode()
                break
            # not up yet, or a first page still rendering on a loaded machine (a read
            # timeout is a bare TimeoutError, not a URLError)
            except (urllib.error.URLError, TimeoutError, ConnectionError):
                assert gui.poll() is None and time.monotonic() < deadline, "webgui did not start"
                time.sleep(0.2)
        assert "probe-firework" in page and "READY" in page
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url, timeout=5)
        assert denied.value.code == 401
    finally:
        gui.terminate()
        gui.wait(timeout=30)
