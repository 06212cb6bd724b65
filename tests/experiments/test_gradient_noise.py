from experiments import gradient_noise


def test_cli_prints_the_per_layer_table(capsys):
    rc = gradient_noise.main(["--data-source=embedded", "--defenses=cvb", "--victims=2",
                              "--draws=2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "update norm over images and draws" in out
    assert "| `['bottleneck']['mu']['w']` |" in out and "| PIG's kept leaves |" in out


def test_cli_refuses_several_stacks(capsys):
    rc = gradient_noise.main(["--data-source=embedded", "--defenses=dp;cvb"])
    assert rc == 2 and "takes one stack here, got 2" in capsys.readouterr().out
