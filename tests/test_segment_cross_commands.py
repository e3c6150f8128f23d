"""A run of another chapter given to the classification commands is named as such, with the command that reads it."""

import json

from cnnzoo.cli.main import main


def _fake_run(tmp_path, kind):
    run = tmp_path / kind
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"kind": kind}))
    (run / "checkpoints" / "last.safetensors").write_bytes(b"not read")
    return run


def test_eval_of_a_segmentation_or_rcnn_run_points_to_its_own_command(tmp_path, capsys):
    for kind, command in (("segmentation", "cnnzoo segment eval"), ("rcnn", "cnnzoo detect eval")):
        run = _fake_run(tmp_path, kind)
        before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
        assert main(["eval", str(run)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and command in err[0] and "not a classification run" in err[0]
        assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
