from experiments import label_counts


def test_cli_prints_a_row_per_setting_with_every_method(capsys):
    rc = label_counts.main(["--data-source=embedded", "--clients=2", "--samples=4",
                            "--batches=2", "--epochs=1", "--methods=idlg,dimitrov",
                            "--num-dummies=16"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "| n | B | E | steps | idlg | dimitrov |" in out
    assert "| 4 | 2 | 1 | 2 |" in out  # n=4 in batches of 2: two steps


def test_cli_refuses_an_unknown_method(capsys):
    rc = label_counts.main(["--data-source=embedded", "--methods=ilrg"])
    assert rc == 2 and "unknown method 'ilrg'" in capsys.readouterr().out
