import subprocess
import sys

from typer.testing import CliRunner

from mammolens import __version__
from mammolens.cli import app
from mammolens.qc import QCTable


def test_qc_table_csv_round_trip(tmp_path):
    qc = QCTable()
    qc.add("ingest", "/x/a.dcm", "not a mammogram: modality CT", image_id="a")
    qc.add("ingest", "/x/b.dcm", "for_processing", severity="flag")
    qc.add("ingest", "/x/c.dcm", "not a mammogram: modality MR")
    p = qc.write_csv(tmp_path / "qc.csv")
    back = QCTable.read_csv(p)
    assert len(back) == 3 and len(back.rejected) == 2 and len(back.flagged) == 1
    assert back.reasons()["not a mammogram"] == 2
    qc2 = QCTable()
    qc2.add("preprocess", "/x/d.png", "no breast found")
    qc2.write_csv(p, append=True)
    assert len(QCTable.read_csv(p)) == 4


def test_version_and_help():
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    r = CliRunner().invoke(app, ["--help"])
    assert r.exit_code == 0 and "mammolens" in r.output


def test_cli_starts_without_torch():
    code = "import sys; import mammolens.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "a command module imports torch at import time"


def test_a_command_module_that_fails_to_import_stops_the_cli(tmp_path, monkeypatch):
    import pytest

    from mammolens import cli

    (tmp_path / "broken_cmd_mod.py").write_text("import no_such_dependency_xyz\n\ndef run():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(cli.CommandImportError, match=r"broken_cmd_mod:run.*no_such_dependency_xyz"):
        cli._load("broken_cmd_mod:run")
    # a command module that does not exist at all is an error too (it used to vanish from --help)
    with pytest.raises(cli.CommandImportError, match="mammolens.commands.no_such_stage"):
        cli._load("mammolens.commands.no_such_stage:run")
    with pytest.raises(cli.CommandImportError, match="has no 'nope'"):
        cli._load("mammolens.commands.synth:nope")


def test_every_registered_command_is_on_the_cli():
    from mammolens import cli

    r = CliRunner().invoke(app, ["--help"], terminal_width=250, env={"COLUMNS": "250"})
    assert r.exit_code == 0
    for name in [*cli.COMMANDS, *cli.GROUPS]:
        assert name in r.output, name
