"""run.py: every command has --explicit-math, the subcommands are imported only when chosen (so `run.py --help`
answers without importing torch), and every --help renders."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import run

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [[name] for name in run.COMMANDS] + [["bench", name] for name in run.BENCHMARKS]
WITH_MODEL = [c for c in COMMANDS if c[0] not in ("download", "compare", "sweep")]


@pytest.mark.parametrize("command", WITH_MODEL, ids=" ".join)
def test_every_command_with_a_model_has_explicit_math(command, capsys):
    with pytest.raises(SystemExit) as done:
        run.main([*command, "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--explicit-math run the plain equations everywhere (attention, LayerNorm, GELU, dropout, top-p, " \
           "AdamW)" in text


def test_sweep_passes_explicit_math_through_to_the_task(tmp_path, capsys):
    from cli.sweep import plan

    runs = plan({"lr": ["1e-3"]}, "sonnet", ["--explicit-math", "--epochs", "1"], str(tmp_path))
    assert "--explicit-math" in runs[0].argv


def test_help_imports_no_subcommand_and_no_torch():
    code = ("import sys; sys.argv = ['run.py', '--help']; import run\n"
            "try:\n    run.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "is a gap real? scores with 95% intervals" in out.stdout  # a literal % in a help text renders
    assert out.stdout.strip().endswith("NO-TORCH")
