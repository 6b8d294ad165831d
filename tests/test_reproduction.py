"""docs/reproduction.md: every command in it parses and validates with crl's own option
parsing, so none goes stale (experiments/reproduction.py reads them, and prices them)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import reproduction

COMMANDS = reproduction.commands()


def test_the_doc_has_a_command_for_each_reproduced_figure():
    names = {command.split("--name ")[1].split()[0] for command in COMMANDS
             if "--name " in command}
    for figure in ("fig1_100m", "fig1_200m", "fig1_400m", "fig3", "fig4_width", "fig5_no_residual",
                   "fig6", "fig7", "fig11", "fig12_u_maze_1024", "fig12_baselines", "fig13"):
        assert figure in names, figure


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_of_the_doc_validates(command):
    configs = reproduction.configs(command, one_seed=True)
    assert configs and all(config.episode_length for config in configs)  # resolved


@pytest.mark.parametrize(("command", "message"), [
    ("python -m crl.sweep --env humanoid --depths 4 6", "depth=6 must be a positive multiple"),
    ("python -m crl.sweep --env humanoid --actor-activation gelu relu",
     "actor_activation='gelu' is unknown"),
    ("python -m crl.train --env humanoid --no-residual", "--no-residual"),
])
def test_a_stale_command_fails_in_one_line(command, message, capsys):
    with pytest.raises(SystemExit):
        reproduction.configs(command)
    assert message in capsys.readouterr().err


def test_a_grid_is_every_point_and_every_seed():
    configs = reproduction.configs("python -m crl.sweep --env ant_big_maze --depths 4 8 "
                                   "--batch-size 256 512 --seeds 0 1 2")
    assert sorted((c.depth, c.batch_size, c.seed) for c in configs) == sorted(
        (d, b, s) for d in (4, 8) for b in (256, 512) for s in (0, 1, 2))
