"""docs/configuration.md is written from the settings: a setting renamed or added shows up there."""

from __future__ import annotations

from schemas import Settings
from schemas.configuration_doc import PAGE, configuration_page, main


def test_the_committed_configuration_page_is_what_the_settings_describe() -> None:
    assert PAGE.read_text(encoding="utf-8") == configuration_page(), (
        "run `python -m schemas.configuration_doc > docs/configuration.md`"
    )


def test_the_page_lists_every_variable_with_its_description() -> None:
    page = configuration_page()
    for name, field in Settings.model_fields.items():
        row = next(line for line in page.splitlines() if line.startswith(f"| `{Settings.env_name(name)}` |"))
        assert " ".join((field.description or "").split()) in row.replace("\\|", "|")


def test_the_page_shows_defaults_as_the_environment_spells_them() -> None:
    rows = {
        line.split(" | ")[0]: line for line in configuration_page().splitlines() if line.startswith("| `")
    }
    assert "| `false` |" in rows["| `RAGSTREAM_API_ACCESS_LOG`"]
    assert "| `docs.events` |" in rows["| `RAGSTREAM_EVENTS_TOPIC`"]
    assert "| unset |" in rows["| `RAGSTREAM_SNAPSHOT_DIR`"]
    assert "| `auto`, `bf16` or `fp32` |" in rows["| `RAGSTREAM_PRECISION`"]


def test_check_mode_passes_on_the_committed_page() -> None:
    assert main(["--check"]) == 0


def test_check_mode_fails_on_a_stale_page(tmp_path, monkeypatch, capsys) -> None:
    from schemas import configuration_doc

    stale = tmp_path / "configuration.md"
    stale.write_text(configuration_page().replace("RAGSTREAM_PARTITIONS", "RAGSTREAM_PARTITION_COUNT"))
    monkeypatch.setattr(configuration_doc, "PAGE", stale)
    assert main(["--check"]) == 1
    assert "python -m schemas.configuration_doc" in capsys.readouterr().err
