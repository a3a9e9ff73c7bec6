"""The container and the manifests agree with the program: a non-root image whose entry point is
``bulkcancel``, manifests that run that image by the Dockerfile's name with flags that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bulkcancel.cli import cancel

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def test_image_runs_bulkcancel_as_a_non_root_user_on_a_slim_base() -> None:
    steps = instructions()
    bases = [rest for keyword, rest in steps if keyword == "FROM"]
    assert bases
    assert all(re.match(r"python:3\.1[1-9]-slim\b", base) for base in bases)
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users, "the image must not run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert int(user) > 0  # numeric: Kubernetes' runAsNonRoot can verify it
    last_user = max(i for i, (keyword, _) in enumerate(steps) if keyword == "USER")
    assert all(keyword != "RUN" for keyword, _ in steps[last_user:])
    (entrypoint,) = [rest for keyword, rest in steps if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["bulkcancel"]
    copied = " ".join(rest for keyword, rest in steps if keyword == "COPY")
    assert "bulkcancel" in copied
    assert "pyproject.toml" in copied


def test_dockerignore_keeps_secrets_and_venvs_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*")] == "*"  # everything is excluded unless named
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "bulkcancel"}


def test_manifests_run_the_image_the_dockerfile_builds() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    built = set(re.findall(r"docker build -t (\S+) ", dockerfile))
    assert len(built) == 1
    manifests = sorted(EXAMPLES.glob("*.yaml"))
    assert manifests
    for path in manifests:
        images = set(re.findall(r"^\s*-?\s*image:\s*(\S+)", path.read_text(), re.M))
        assert images == built, path.name
        # The entry point is bulkcancel: a manifest passes the subcommand, not the program.
        assert not re.search(r'command:\s*\["bulkcancel"', path.read_text()), path.name


def test_every_flag_in_the_examples_exists() -> None:
    known = {opt for param in cancel.params for opt in param.opts if opt.startswith("--")}
    files = [*EXAMPLES.glob("*.yaml"), EXAMPLES / "crontab.txt"]
    used = set()
    for path in files:
        body = "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
        )
        used |= {flag for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", body)}
    assert used
    unknown = used - known
    assert not unknown, f"flags that bulkcancel cancel does not have: {sorted(unknown)}"
