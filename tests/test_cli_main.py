from dinogeo.cli.main import SUBCOMMANDS, main


def test_help_lists_every_subcommand(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


def test_unknown_subcommand_is_an_error(capsys):
    assert main(["nope"]) == 2
    assert "unknown subcommand" in capsys.readouterr().err
