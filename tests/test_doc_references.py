"""docs/operations.md's option table of `serve` lists every setting the command has."""

from __future__ import annotations

import re
from pathlib import Path

from autogen_http_runtime._cli.settings import ServeSettings

DOC = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


def option_rows() -> list[tuple[str, str]]:
    """(option cell, variable cell) of each row of the table under "Running the host"."""
    section = DOC.read_text("utf-8").split("\n## Running the host\n", 1)[1].split("\n## ", 1)[0]
    table = section.split("| option | variable | default |\n|---|---|---|\n", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows.append((cells[0], cells[1]))
    return rows


def test_every_setting_of_serve_has_its_row() -> None:
    rows = option_rows()
    options = {flag for cell, _ in rows for flag in re.findall(r"`(--[a-z0-9-]+)`", cell)}
    variables = " ".join(variable for _, variable in rows)
    for name in ServeSettings.model_fields:
        flag = "--" + name.replace("_", "-")
        assert flag in options, f"docs/operations.md's option table has no row for {flag}"
        if not name.startswith("ssl_"):  # one row for all of them: `AUTOGEN_HTTP_SSL_KEYFILE`, ...
            assert f"`AUTOGEN_HTTP_{name.upper()}`" in variables, name
    # And nothing the command does not have.
    assert options == {"--" + name.replace("_", "-") for name in ServeSettings.model_fields}


def test_the_readme_sections_that_samples_cite_exist() -> None:
    root = DOC.parent.parent
    headings = set(re.findall(r"^#+ (.+?)\s*$", (root / "README.md").read_text("utf-8"), flags=re.M))
    cited = {}
    for sample in sorted((root / "samples").rglob("*.py")):
        text = sample.read_text("utf-8")
        # README, then a quoted section name on the same line: 'README.md, section "Quick start"'.
        for section in re.findall(r'README[^\n"]*"([^"]+)"', text):
            cited[f"{sample.relative_to(root)}: {section}"] = section
    assert cited, "no sample cites a README section: this test looks for the wrong pattern"
    missing = [where for where, section in cited.items() if section not in headings]
    assert not missing, f"README.md has no such section: {missing}"
