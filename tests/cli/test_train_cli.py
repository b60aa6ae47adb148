"""`edgempir train` as a user runs it: end to end on synthetic data, and every bad input."""
import json

import pytest


def test_train_end_to_end_prints_table_and_json(cli, tmp_path):
    out = tmp_path / "run"
    proc = cli("train", "--dataset", "synthetic", "--bits", "2,32", "--epochs", "1",
                   "--out", str(out))
    assert "ensemble vote (deployed)" in proc.stdout and "protocol: clean" in proc.stdout
    assert (out / "manifest.json").is_file()
    # --resume on a finished run trains nothing and reports it again, here as JSON
    again = cli("train", "--dataset", "synthetic", "--bits", "2,32", "--epochs", "1",
                "--out", str(out), "--resume", "--json")
    report = json.loads(again.stdout)
    assert [m["spec"] for m in report["manifest"]["members"]] == ["w2a2", "fp32"]


@pytest.mark.parametrize("args, message", [
    (["--bits", "0,32"], "out of range"),
    (["--bits", "33,32"], "out of range"),
    (["--members", "abc,fp32"], "not understood"),
    (["--members", "fp32"], "at least 2"),
    (["--members", "w2a4,fp32", "--bits", "2,32"], "give only one"),
    (["--dataset", "mnist", "--data-dir", "NOWHERE"], "does not exist"),
    (["--dataset", "fashion-mnist", "--data-dir", "EMPTY"], "dataset-fashion-mnist"),
    (["--arch", "vgg"], "unknown architecture"),
    (["--resume"], "nothing to resume"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(cli, tmp_path, args, message):
    (tmp_path / "EMPTY").mkdir()
    args = [a.replace("NOWHERE", str(tmp_path / "nowhere")).replace("EMPTY", str(tmp_path / "EMPTY"))
            for a in args]
    if "--dataset" not in args:
        args += ["--dataset", "synthetic"]
    out = tmp_path / "run"
    proc = cli("train", *args, "--epochs", "1", "--out", str(out), check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not (tmp_path / "run.partial").exists()


def test_existing_run_is_kept_without_force(cli, synthetic_run):
    before = (synthetic_run / "manifest.json").read_bytes()
    proc = cli("train", "--dataset", "synthetic", "--out", str(synthetic_run), check=False)
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert (synthetic_run / "manifest.json").read_bytes() == before


def test_help_shows_defaults_and_example(cli):
    text = " ".join(cli("train", "--help").stdout.split())  # undo click's line wrapping
    assert "[default: 5; 1<=x<=10000]" in text and "[default: vote]" in text and "Examples:" in text


def test_load_run_api_on_a_trained_run(synthetic_run):
    import edgempir

    ens = edgempir.load_run(synthetic_run)
    assert [s.name for s in ens.specs] == ["w2a4", "w4a4", "fp32"]
    assert ens.combiner == "vote" and not ens.training


def test_missing_weights_is_a_clear_error(synthetic_run, tmp_path):
    import shutil

    from edgempir.errors import RunDirError
    from edgempir.rundir import load_run

    broken = tmp_path / "broken"
    shutil.copytree(synthetic_run, broken)
    next((broken / "members").iterdir()).unlink()
    with pytest.raises(RunDirError, match="missing"):
        load_run(broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunDirError, match="version 99"):
        load_run(broken)
