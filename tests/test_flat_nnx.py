"""examples/flat_nnx.py: NNX training on flat buffers matches nnx.Optimizer on the tree."""

import json

from examples import flat_nnx


def test_flat_training_matches_tree_training(tmp_path, capsys):
    report = flat_nnx.main(["--quick", "--no-progress", "--out", str(tmp_path)])
    # The same elementwise math on both paths: only round-off separates them.
    assert report["max_abs_param_difference"] < 1e-5
    assert report["flat"]["test_accuracy"] == report["tree"]["test_accuracy"]
    assert abs(report["final_loss"]["flat"] - report["final_loss"]["tree"]) < 1e-4
    # One float32 buffer, the decayed kernels first: all but the biases and LayerNorm params,
    # that is depth * width hidden biases, 2 * depth * width LayerNorm scales and biases, and
    # the head's 10 biases (10 digit classes).
    width, depth = report["config"]["width"], report["config"]["depth"]
    assert list(report["buffers"]) == ["float32"]
    assert report["decayed_per_buffer"]["float32"] == report["n_params"] - 3 * depth * width - 10
    assert json.loads((tmp_path / "results.json").read_text()) == report
    assert (tmp_path / "flat_nnx.png").stat().st_size > 0
    assert "largest |flat - tree|" in capsys.readouterr().out
