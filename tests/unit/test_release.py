"""Release hygiene: the licence is shipped and declared, the version comes from package metadata."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from click.testing import CliRunner

from runtime.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_version_option_prints_the_installed_distribution_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"plugin-runtime, version {importlib.metadata.version('plugin-runtime')}"
    )


def test_licence_file_is_apache_2_and_declared_in_pyproject() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "Grant of Patent License" in text  # the reason it was chosen: see CHANGELOG/README
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert importlib.metadata.metadata("plugin-runtime")["License-Expression"] == "Apache-2.0"


def test_classifiers_name_each_supported_python_and_requires_python_agrees() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    versions = sorted(
        c.rsplit(":: ", 1)[1]
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert versions == ["3.11", "3.12", "3.13"]
    assert project["requires-python"] == ">=3.11"


def test_changelog_has_a_section_for_the_current_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    version = importlib.metadata.version("plugin-runtime")
    assert re.search(rf"^## \[{re.escape(version)}\]", changelog, re.M), version
    assert re.search(r"^## \[Unreleased\]", changelog, re.M)
