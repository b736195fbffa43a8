"""deploy/: every file parses, and every bmm-dask command line in it is one the real CLI accepts."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import pytest
import yaml

from bmm_dask.cli import cli

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DOCKER_INSTRUCTIONS = {
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
}


def check_command(words: list[str]) -> None:
    """Parse a bmm-dask command line with the real CLI, without running it."""
    assert words[0] == "bmm-dask", words
    group: click.Group = cli
    words = words[1:]
    while True:
        command = group.get_command(click.Context(group), words[0])
        assert command is not None, f"no bmm-dask command {words[0]!r}"
        if not isinstance(command, click.Group):  # submit fit: the command under the group
            break
        group, words = command, words[1:]
    try:
        command.make_context(words[0], words[1:])
    except click.UsageError as err:
        pytest.fail(f"{' '.join(words)}: {err.format_message()}")


def commands_in(text: str) -> list[list[str]]:
    """bmm-dask command lines in a shell text: joined continuations, split at && and ;."""
    text = text.replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        for part in re.split(r"&&|;|\|\|", line):
            words = shlex.split(part, comments=True)
            while (words and words[0] in ("[", "]", "-d", "||")) or (
                words and words[0].startswith(('"', "$"))
            ):
                words = words[1:]
            if "bmm-dask" in words:
                words = words[words.index("bmm-dask") :]
                found.append(words)
    return found


def test_dockerfile_is_well_formed() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = text.replace("\\\n", " ").splitlines()
    instructions = [
        line.split()[0] for line in lines if line.strip() and not line.lstrip().startswith("#")
    ]
    assert instructions[0] == "FROM"
    assert set(instructions) <= DOCKER_INSTRUCTIONS, set(instructions) - DOCKER_INSTRUCTIONS
    assert "COPY bmm_dask ./bmm_dask" in text and "pip install" in text
    if shutil.which("hadolint"):
        subprocess.run(["hadolint", str(DEPLOY / "Dockerfile")], check=True)


def test_compose_file() -> None:
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"scheduler", "worker", "job"} <= set(services)
    assert services["worker"]["deploy"]["replicas"] >= 1
    assert (
        "data:/data" in services["worker"]["volumes"] and "data:/data" in services["job"]["volumes"]
    )
    assert services["scheduler"]["ports"] == ["127.0.0.1:8787:8787"]
    commands = commands_in(services["job"]["command"][-1])
    assert [c[1] for c in commands] == ["ingest", "fit", "evaluate", "report"]
    for command in commands:
        check_command(command)


def test_long_lived_cluster() -> None:
    compose = yaml.safe_load((DEPLOY / "compose" / "cluster.yaml").read_text())
    services = compose["services"]
    assert {"scheduler", "worker", "minio", "bucket"} <= set(services)
    # published on this machine only; reached from a laptop through SSH
    ports = [p for service in services.values() for p in service.get("ports", [])]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)
    assert "127.0.0.1:8786:8786" in services["scheduler"]["ports"]
    for name in ("scheduler", "worker", "tools"):
        assert services[name]["environment"]["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert services["worker"]["restart"] == "unless-stopped"
    assert "--preload" in services["worker"]["command"]  # a first submit answers at once
    for command in commands_in(services["tools"]["command"][-1]):
        check_command(command)
    # the laptop's side, as deploy/README.md gives it
    readme = (DEPLOY / "README.md").read_text()
    section = readme[readme.index("## Jobs from a laptop") :]
    section = section[: section.index("\n## ", 5)]
    code = "\n".join(line for line in section.splitlines() if line.startswith("    "))
    commands = commands_in(code)
    assert {"submit", "jobs", "logs", "wait", "cancel", "status"} <= {c[1] for c in commands}
    for command in commands:
        check_command(command)


def test_kubernetes_daskjob() -> None:
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "daskjob.yaml").read_text()))
    job = next(d for d in documents if d["kind"] == "DaskJob")
    assert job["apiVersion"] == "kubernetes.dask.org/v1"
    pod = job["spec"]["job"]["spec"]
    for container in pod["containers"] + pod["initContainers"]:
        check_command([str(a) for a in container["args"]])
    assert job["spec"]["cluster"]["spec"]["worker"]["replicas"] >= 1


def test_slurm_script() -> None:
    script = DEPLOY / "slurm" / "bmm-dask.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert (
        "#SBATCH --nodes" in text and "dask scheduler --scheduler-file" in text and "srun" in text
    )
    commands = commands_in(text)
    assert {c[1] for c in commands} == {"ingest", "fit", "evaluate"}
    for command in commands:
        check_command(command)


def test_a_wrong_command_line_is_caught() -> None:
    with pytest.raises(pytest.fail.Exception, match="No such option"):
        check_command(["bmm-dask", "fit", "d.zarr", "--k", "3", "--out", "m.zarr", "--bogus"])
    with pytest.raises(pytest.fail.Exception, match="No such option"):
        check_command(
            ["bmm-dask", "submit", "fit", "d.zarr", "--k", "3", "--out", "m", "--workers", "2"]
        )
