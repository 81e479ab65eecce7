"""A run writes only into an empty directory or its own run's (training/out_dir.py): it never overwrites or
deletes the user's files, never writes over an input a flag names, and deletes only the atomic writer's own
temporary files, anywhere under the out-dir, after a kill too."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import run
from tests._fixtures import Affine, affine_data, cfg_for, collate_xy, mse, write_fixture
from tests._task_fixtures import tokenizer_dir
from training.checkpointing import CheckpointError
from training.out_dir import RUN
from training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
KILLED_EXPORT = ".model.safetensors.0123abcd.tmp"  # what a kill during the export leaves (atomic_write's name)


def fit(out: Path, **kw):
    return train(Affine(), affine_data(4), collate_xy, mse, cfg_for(out, **kw))


def user_files(out: Path) -> dict[str, str]:
    """A directory a user filled by hand: results of their own, and *.tmp files of theirs."""
    files = {"result.json": '{"mine": 1}\n', "metrics.jsonl": "my line\n", "notes.tmp": "draft",
             "predictions/my-dev-out.csv": "id,pred\n"}
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    return files


# ---- which directories a run may write into ------------------------------------------------------------------
def test_a_directory_of_user_files_is_refused_untouched(tmp_path):
    files = user_files(tmp_path)
    with pytest.raises(CheckpointError, match=r"holds files that no minigpt run wrote \(metrics.jsonl, notes.tmp"):
        fit(tmp_path)
    assert {n: (tmp_path / n).read_text() for n in files} == files and not (tmp_path / RUN).exists()


def test_the_same_run_again_is_accepted_another_run_is_refused(tmp_path):
    (tmp_path / "last.pt").parent.mkdir(exist_ok=True)
    fit(tmp_path, epochs=1, max_steps=1)  # a smoke run; last.pt and run.json are written
    (tmp_path / "last.pt").unlink()  # as if killed before its first checkpoint
    fit(tmp_path, epochs=1)  # the same settings (--max-steps cannot change the numbers): its own run
    assert json.loads((tmp_path / RUN).read_text())["settings"]["lr"] == 1e-2
    (tmp_path / "last.pt").unlink()
    with pytest.raises(CheckpointError, match=r"holds another run .*other settings: epochs: 1 -> 2; lr: 0.01 -> 0.5"):
        fit(tmp_path, epochs=2, lr=0.5)
    assert json.loads((tmp_path / RUN).read_text())["settings"]["epochs"] == 1  # still the first run's record


def test_a_damaged_run_record_is_named(tmp_path):
    (tmp_path / RUN).write_text("{not json")
    with pytest.raises(CheckpointError, match=f"{tmp_path / RUN} is damaged"):
        fit(tmp_path)


# ---- temporary files: only the writer's own, anywhere under the out-dir -------------------------------------
def test_temporary_files_of_a_killed_export_are_removed_by_resume_and_by_a_rerun(tmp_path):
    """Issue 22 point 4: a kill during the export left model/.model.safetensors.<random>.tmp, which a successful
    --resume kept (only the top of the out-dir was cleaned)."""
    fit(tmp_path, epochs=2, max_steps=2)
    for sub in ("model", "predictions"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / KILLED_EXPORT).write_bytes(b"half")
        (tmp_path / sub / "keep.tmp").write_text("not the writer's name")
    fit(tmp_path, epochs=2, resume=True)
    assert not list(tmp_path.rglob(KILLED_EXPORT))
    assert sorted(p.parent.name for p in tmp_path.rglob("keep.tmp")) == ["model", "predictions"]
    (tmp_path / "model" / KILLED_EXPORT).write_bytes(b"half")
    (tmp_path / "last.pt").unlink()  # a rerun of the same run from the start cleans up too
    fit(tmp_path, epochs=2)
    assert not list(tmp_path.rglob(KILLED_EXPORT)) and (tmp_path / "model" / "keep.tmp").exists()


# ---- inputs inside the out-dir -------------------------------------------------------------------------------
def test_an_input_inside_the_out_dir_or_behind_a_link_in_it_is_refused(tmp_path):
    source = tmp_path / "my-model"
    source.mkdir()
    (source / "config.json").write_text("{}")
    out = tmp_path / "out"
    fit(out, epochs=1, settings={"model": str(source)})
    (out / "model").symlink_to(source)  # out/model, where the export goes, leads to the user's model
    with pytest.raises(CheckpointError, match=rf"--model {source} lies inside --out-dir {out}"):
        fit(out, epochs=1, settings={"model": str(source)}, resume=True)
    with pytest.raises(CheckpointError, match=rf"--model {out / 'model'} lies inside --out-dir {out}"):
        fit(out, epochs=1, settings={"model": str(out / "model")})
    assert (source / "config.json").read_text() == "{}"


# ---- the command line ------------------------------------------------------------------------------------------
@pytest.fixture
def sonnet_argv(tmp_path):
    data, tok = write_fixture(tmp_path / "data"), tokenizer_dir(tmp_path / "tok")

    def argv(out: Path, *extra):
        return ["sonnet", "--data-dir", str(data), "--out-dir", str(out), "--model", "scratch", "--scratch-config",
                "n_layer=1,n_head=1,n_embd=16", "--tokenizer", str(tok), "--skip-test", "--decoder", "greedy",
                "--max-new-tokens", "2", "--dev-limit", "1", "--device", "cpu", *extra]
    return argv


def last_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_sonnet_epochs_0_into_a_trained_run_is_refused(tmp_path, sonnet_argv, capsys):
    out = tmp_path / "run"
    assert run.main(sonnet_argv(out, "--epochs", "1")) == 0
    before = {n: (out / n).read_bytes() for n in ("result.json", "generated_sonnets_dev.txt")}
    assert run.main(sonnet_argv(out, "--epochs", "0")) == 1
    err = last_error(capsys)
    assert "holds another run" in err and "epochs: 1 -> 0" in err
    assert {n: (out / n).read_bytes() for n in before} == before
    fresh = tmp_path / "untrained"
    assert run.main(sonnet_argv(fresh, "--epochs", "0")) == 0 and (fresh / RUN).is_file()
    assert run.main(sonnet_argv(fresh, "--epochs", "0")) == 0  # the same --epochs 0 run again: its own


def test_an_export_never_writes_over_its_model_source(tmp_path, sonnet_argv, capsys):
    """--model X/model --out-dir X: X a finished run, or a directory of the user's holding their model."""
    import shutil

    out = tmp_path / "run"
    assert run.main(sonnet_argv(out, "--epochs", "1")) == 0
    mine = tmp_path / "mine"
    shutil.copytree(out / "model", mine / "model")
    for x in (out, mine):
        weights = (x / "model" / "model.safetensors").read_bytes()
        argv = sonnet_argv(x, "--epochs", "1")
        argv[argv.index("scratch")] = str(x / "model")
        assert run.main(argv) == 1
        assert f"--model {x / 'model'} lies inside --out-dir {x}" in last_error(capsys)
        assert (x / "model" / "model.safetensors").read_bytes() == weights


def test_an_empty_out_dir_is_refused_and_a_tilde_is_the_home_directory(tmp_path, sonnet_argv, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.tmp").write_text("mine")
    argv = sonnet_argv(Path("x"), "--epochs", "0")
    argv[argv.index("x")] = ""
    with pytest.raises(SystemExit) as exit_status:
        run.main(argv)
    assert exit_status.value.code == 1 and "argument --out-dir: " in last_error(capsys)
    assert (tmp_path / "mine.tmp").exists()
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    argv[argv.index("")] = "~/runs/x"
    assert run.main(argv) == 0
    assert (home / "runs" / "x" / "result.json").is_file() and not (tmp_path / "~").exists()
