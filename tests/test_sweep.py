"""`run.py sweep`: the grid, the early checks, and real sweeps of tiny sonnet runs (each run a child process)."""
import json
from pathlib import Path

import pytest

import run
from cli.sweep import TASKS, parse_grid, plan, run_name
from minigpt.tokenizer import write_vocab_files
from tests._fixtures import TINY, write_fixture


@pytest.fixture
def sonnet_setup(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # each child run on one thread: tiny models, runs side by side
    data = write_fixture(tmp_path / "data")
    tok = write_vocab_files(tmp_path / "tok", [("t", "h"), ("th", "e"), ("Ġ", "th"), ("o", "u")])
    shared = ["--data-dir", str(data), "--model", "scratch", "--scratch-config", TINY, "--tokenizer", str(tok),
              "--decoder", "greedy", "--max-new-tokens", "16", "--batch-size", "4", "--epochs", "1",
              "--max-steps", "2", "--skip-test", "--device", "cpu"]
    return tmp_path / "sweep", shared


def sweep(out_dir, grid: list[str], shared: list[str], *options: str) -> int:
    argv = ["sweep", "--out-dir", str(out_dir), *options]
    for spec in grid:
        argv += ["--grid", spec]
    return run.main([*argv, "sonnet", *shared])


def test_grid_is_every_combination_first_flag_slowest():
    grid = parse_grid(["lr=1e-5,5e-5", "--batch-size=8,32", "use-mean-sim=off,on"])
    assert grid == {"lr": ["1e-5", "5e-5"], "batch-size": ["8", "32"], "use-mean-sim": ["off", "on"]}
    runs = plan(grid, "sonnet", ["--epochs", "3"], "out")
    assert [r.name for r in runs][:3] == ["lr=1e-5_batch-size=8_use-mean-sim=off",
                                          "lr=1e-5_batch-size=8_use-mean-sim=on",
                                          "lr=1e-5_batch-size=32_use-mean-sim=off"]
    assert len(runs) == 8 and len({r.name for r in runs}) == 8
    on, off = runs[1].argv, runs[0].argv
    assert on == ["--epochs", "3", "--lr", "1e-5", "--batch-size", "8", "--use-mean-sim",
                  "--out-dir", "out/lr=1e-5_batch-size=8_use-mean-sim=on"]
    assert "--use-mean-sim" not in off  # a switch's "off" leaves the flag out
    assert run_name({"model": "runs/a b/model"}) == "model=runs-a-b-model"


@pytest.mark.parametrize("grid, shared, message", [
    (["lr"], [], "write FLAG=V1,V2"),
    (["lr="], [], "no empty values"),
    (["lr=1e-5,,2e-5"], [], "no empty values"),
    (["lr=1e-5", "lr=2e-5"], [], "given twice"),
    (["lr=1e-5,1e-5"], [], "listed twice"),
    (["lrr=1e-5"], [], "has no flag --lrr"),
    (["lr=fast"], [], "setting lr=fast: the task would reject this setting: argument --lr: invalid float"),
    (["use-mean-sim=yes"], [], "its values are on and off"),
    (["decoder=greedy,nucleus"], [], "setting decoder=nucleus"),
    (["lr=1e-5"], ["--lr", "2e-5"], "both in --grid and in the task's flags"),
    (["lr=1e-5"], ["--out-dir", "x"], "--out-dir is set by the sweep"),
    (["lr=1e-5"], ["--resume"], "--resume is set by the sweep"),
    (["model=a/b,a-b"], [], "the same run directory name"),
    (["out-dir=a,b"], [], "the sweep sets --out-dir for each run"),
    (["resume=on,off"], [], "the sweep sets --resume for each run"),
])
def test_bad_grids_fail_before_any_run(tmp_path, capsys, grid, shared, message):
    assert sweep(tmp_path / "out", grid, shared) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sweep_runs_ranks_skips_and_resumes(sonnet_setup, capsys):
    """The first sweep runs its two settings side by side (--gpus 0,1, on the CPU here); the second, one at a time."""
    out, shared = sonnet_setup
    assert sweep(out, ["lr=1e-3,1e-2"], shared, "--gpus", "0,1") == 0
    rows = json.loads((out / "sweep.json").read_text())
    assert [r["run"] for r in rows] == sorted((r["run"] for r in rows), key=lambda n: -next(
        x["dev_chrf"] for x in rows if x["run"] == n))
    assert {r["run"] for r in rows} == {"lr=1e-3", "lr=1e-2"} and all(r["status"] == "done" for r in rows)
    assert set(TASKS["sonnet"]) <= {k for k, v in rows[0].items() if isinstance(v, float)}  # --metric's choices
    for r in rows:  # each row is the run's own result.json plus its setting
        assert r == {"run": r["run"], "lr": r["run"][3:], "status": "done",
                     **json.loads((out / r["run"] / "result.json").read_text())}
        assert (out / r["run"] / "generated_sonnets_dev.txt").is_file()
    table = capsys.readouterr().out
    assert table.index(rows[0]["run"] + " ") < table.index(rows[1]["run"] + " ")  # printed best first

    # lr=1e-2 "interrupted" (its checkpoint, no result yet): continued with --resume, one run at a time;
    # lr=1e-3 skipped
    result = out / "lr=1e-2" / "result.json"
    before = json.loads(result.read_text())
    assert before["dev_chrf"] != before["floor_prompts"]  # it wrote more than the prompts: the check below bites
    result.unlink()
    assert sweep(out, ["lr=1e-3,1e-2"], shared) == 0
    said = capsys.readouterr().out
    assert "[1/2] lr=1e-3: finished earlier with the same settings, skipped" in said
    assert "[2/2] lr=1e-2: continuing (--resume)" in said
    after = json.loads(result.read_text())
    assert after["dev_chrf"] == before["dev_chrf"]  # max_steps had been reached: same weights, same sonnets
    assert before["best_epoch"] == after["best_epoch"] == 1  # the evaluation where max_steps stopped, again


def test_dry_run_prints_the_commands_and_runs_nothing(sonnet_setup, capsys):
    out, shared = sonnet_setup
    assert sweep(out, ["lr=1e-3,3e-3"], shared, "--dry-run") == 0
    said = capsys.readouterr().out
    assert said.count("python run.py sonnet ") == 2 and f"--out-dir {out}/lr=3e-3" in said
    assert not out.exists()


def test_gpus_run_settings_side_by_side_a_failing_run_is_reported_and_the_sweep_goes_on(sonnet_setup, capsys):
    out, shared = sonnet_setup  # no GPU here: the runs use --device cpu, the scheduling is what is tested
    i = shared.index("--max-new-tokens")
    shared = shared[:i] + shared[i + 2:]
    # 1000 new tokens do not fit the tiny model's 256 positions: that run fails once its model is loaded
    assert sweep(out, ["max-new-tokens=1000,16,12"], shared, "--gpus", "0,1") == 1
    said = capsys.readouterr().out
    assert "[1/3] max-new-tokens=1000: starting on GPU 0" in said
    assert "[2/3] max-new-tokens=16: starting on GPU 1" in said
    assert "[3/3] max-new-tokens=12: starting on GPU" in said  # on whichever GPU came free first
    assert "max-new-tokens=1000: failed with exit status 1; going on" in said
    rows = json.loads((out / "sweep.json").read_text())
    assert sorted((r["run"], r["status"]) for r in rows) == [
        ("max-new-tokens=1000", "failed (exit 1)"), ("max-new-tokens=12", "done"), ("max-new-tokens=16", "done")]
    assert rows[-1]["run"] == "max-new-tokens=1000"  # a run without a score is ranked last
    for name in ("max-new-tokens=16", "max-new-tokens=12"):
        assert "dev chrF" in (out / f"{name}.log").read_text() and (out / name / "result.json").is_file()
    assert "error: " in (out / "max-new-tokens=1000.log").read_text()


def test_a_metric_the_task_does_not_write_is_refused_before_any_run(tmp_path, capsys):
    assert sweep(tmp_path / "out", ["lr=1e-3"], [], "--metric", "dev_chrff") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--metric dev_chrff: `run.py sonnet` writes no such score" in err
    assert "dev_chrf, dev_chrf_mean" in err and not (tmp_path / "out").exists()


def test_a_rerun_with_other_shared_flags_is_refused_listing_them(sonnet_setup, capsys):
    """The 1-epoch runs do not answer the 2-epoch question: nothing is skipped, nothing is rerun."""
    out, shared = sonnet_setup
    assert sweep(out, ["lr=1e-3"], shared) == 0
    result = (out / "lr=1e-3" / "result.json").read_text()
    capsys.readouterr()
    i = shared.index("--epochs")
    assert sweep(out, ["lr=1e-3"], shared[:i] + ["--epochs", "2"] + shared[i + 2:]) == 1
    said = capsys.readouterr()
    assert "skipped" not in said.out and said.err.count("\n") == 1
    assert f"{out / 'lr=1e-3'} was run with other settings (epochs: 1 -> 2)" in said.err
    assert (out / "lr=1e-3" / "result.json").read_text() == result
    data = Path(shared[shared.index("--data-dir") + 1]) / "sonnets.txt"  # a data file edited in place: another
    data.write_text(data.read_text() + "\n")  # question too
    assert sweep(out, ["lr=1e-3"], shared) == 1
    assert "file sonnets.txt: contents changed" in capsys.readouterr().err


def test_a_damaged_result_is_written_again(sonnet_setup, capsys):
    out, shared = sonnet_setup
    assert sweep(out, ["lr=1e-3"], shared) == 0
    result = out / "lr=1e-3" / "result.json"
    before = json.loads(result.read_text())
    result.write_text(result.read_text()[:20])
    capsys.readouterr()
    assert sweep(out, ["lr=1e-3"], shared) == 0
    said = capsys.readouterr().out
    assert "result.json is damaged: continuing with --resume, which writes it again" in said
    rows = json.loads((out / "sweep.json").read_text())
    assert rows[0]["status"] == "done" and json.loads(result.read_text()) == before


@pytest.mark.parametrize("gpus", ["0,0", "a", "0,,1"])
def test_bad_gpu_lists_are_refused(tmp_path, capsys, gpus):
    assert sweep(tmp_path / "out", ["lr=1e-3"], [], "--gpus", gpus) == 1
    assert "write distinct GPU numbers" in capsys.readouterr().err
