"""The repository's promises to a new user: the README's commands are the ones CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _ci_command() -> str:
    match = re.search(r'^TEST_COMMAND="(.+)"$', (ROOT / ".ci/run").read_text(), re.MULTILINE)
    assert match, ".ci/run must define TEST_COMMAND"
    return match.group(1)


def test_readme_test_command_is_what_ci_runs():
    assert _ci_command() in (ROOT / "README.md").read_text()


def test_readme_server_command_starts_the_tiny_preset():
    readme = (ROOT / "README.md").read_text()
    assert "python server.py --model tiny --host 127.0.0.1 --port 8000" in readme
    assert "curl" in readme and "/generate" in readme


def test_test_input_and_docs_use_the_same_fields():
    import json

    from ltx2.schema import GenerateRequest

    fields = set(GenerateRequest.model_fields)
    llms = (ROOT / "llms.txt").read_text()
    readme = (ROOT / "README.md").read_text()
    for name in fields:
        assert f"`{name}`" in llms, f"llms.txt does not document {name}"
        assert f"`{name}`" in readme, f"README does not document {name}"
    assert set(json.loads((ROOT / "test_input.json").read_text())["input"]) <= fields


def test_readme_documents_every_setting():
    from ltx2.settings import ENV

    readme = (ROOT / "README.md").read_text()
    for name, env in ENV.items():
        assert f"`{env}`" in readme, f"README does not document {env}"
        assert f"`--{name.replace('_', '-')}`" in readme, f"README does not document --{name.replace('_', '-')}"


def test_dockerfile_installs_dependencies_before_it_copies_the_code():
    """Editing ltx2/ must not invalidate the layer that installs torch and the other dependencies."""
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    copy_code = lines.index("COPY ltx2 ./ltx2")
    torch = next(i for i, line in enumerate(lines) if "pip install torch" in line)
    copied_before = [line for line in lines[:torch] if line.startswith("COPY")]
    assert torch < copy_code and copied_before == ["COPY pyproject.toml ./"], copied_before
    assert any("pip install --no-deps ." in line for line in lines[copy_code:])
