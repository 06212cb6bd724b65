"""The benchmark script runs end to end and prints the documented JSON records."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import attack_throughput  # noqa: E402

REQUIRED = ("impl", "model", "input_shape", "victims", "victim_iters_per_s", "compile_s",
            "peak_fraction")


def test_json_lines_have_the_documented_fields(capsys):
    attack_throughput.main([
        "--models=cnn", "--shapes=28x28x1", "--victims=2", "--impls=jgi-vmap,jgi-loop",
        "--iters=2", "--repeats=1", "--pause=0", "--fl-stacks=none", "--fl-clients=2",
        "--fl-batches=1", "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    attack = [r for r in lines if r["impl"] != "jgi-fedavg"]
    fed = [r for r in lines if r["impl"] == "jgi-fedavg"]
    assert sorted(r["impl"] for r in attack) == ["jgi-loop", "jgi-vmap"]
    for r in attack:
        assert all(k in r for k in REQUIRED), r
        assert r["victims"] == 2 and r["victim_iters_per_s"] > 0 and r["compile_s"] > 0
        assert 0 < r["peak_fraction"] < 1.5 and r["flops_per_victim_iter"] > 1e6
    assert len(fed) == 1 and fed[0]["samples_per_s"] > 0 and fed[0]["samples_per_round"] == 128


def test_unknown_names_are_refused_with_the_valid_ones(capsys):
    with pytest.raises(SystemExit):
        attack_throughput.main(["--shapes=64x64x3"])
    assert "valid: 28x28x1, 32x32x3" in capsys.readouterr().err


def test_fedavg_flops_per_sample_do_not_depend_on_client_batch():
    # XLA counts a scan body once: with clients trained a group at a time the round's
    # FLOPs cover one group, and the per-sample figure must be divided accordingly.
    flops = {}
    for client_batch in (None, 1, 2):
        args = SimpleNamespace(fl_client_batch=client_batch, fl_clients=3, fl_batches=1,
                               repeats=1, pause=0)
        rec = attack_throughput.run_fedavg("cnn", "28x28x1", "none", args, peak=1e10)
        flops[client_batch] = rec["flops_per_sample"]
    assert flops[None] > 1e6
    for client_batch in (1, 2):
        assert flops[client_batch] == pytest.approx(flops[None], rel=0.05), flops


HLO = """HloModule jit_chunk

FileNames
1 "/x/jgi/models/layers.py"
2 "/x/jgi/models/bottleneck.py"
FunctionNames
1 "conv"
2 "cvb_apply"
FileLocations
1 {file_name_id=1 function_name_id=1 line=119 end_line=119 column=1 end_column=2}
2 {file_name_id=2 function_name_id=2 line=127 end_line=127 column=1 end_column=2}
StackFrames
1 {file_location_id=2 parent_frame_id=1}
2 {file_location_id=1 parent_frame_id=2}

ENTRY %main {
  %dot.1 = f32[2]{0} dot(%a, %b), metadata={op_name="DOT_NAME" stack_frame_id=2}
  ROOT %pad_fusion.3 = f32[2]{0} fusion(%c), metadata={op_name="PAD_NAME" stack_frame_id=1}
}
""".replace("DOT_NAME", "jit(chunk)/vmap(transpose(jvp(transpose(jvp(bhwp,po->bhwo)))))/"
            "dot_general").replace("PAD_NAME", "jit(chunk)/vmap(jvp())/pad")


def test_hlo_sources_names_the_python_line_and_derivative_order():
    # The profile's attribution: frame 2 (layers.py:conv) was called from frame 1
    # (bottleneck.py:cvb_apply); a printed parent_frame_id is the parent's id + 1.
    sources = attack_throughput.hlo_sources(HLO)
    assert sources["dot.1"] == ("layers.py:conv:119 < bottleneck.py:cvb_apply:127",
                                "d2 dot_general")
    assert sources["pad_fusion.3"] == ("bottleneck.py:cvb_apply:127", "fwd pad")
