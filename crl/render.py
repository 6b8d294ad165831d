"""Pictures of a policy: ``python -m crl.render runs/<name> [--epoch E] [--env NAME]``.

A training run renders its final policy into ``<run>/render/`` (unless ``--no-render``). The
deterministic policy (tanh of the mean action) is rolled out for one episode on a few fresh
evaluation envs, and saved as:

- ``epoch_<E>.png``: the path of the achieved goal (e.g. the torso's x, y) of every episode,
  from start (dot) to goal (star, circled by the success radius), over the maze walls. Drawn
  with matplotlib, for every env whose goal has two or more coordinates: the pure-JAX point
  maze, which has no physics pipeline to render, gets this picture too.
- ``epoch_<E>.html``: Brax's interactive 3-D viewer of the first episode (Brax envs only).
- ``epoch_<E>.mp4``: a video of the first episode rendered by MuJoCo (Brax envs only). It
  needs an OpenGL context: on a headless machine set ``MUJOCO_GL=egl`` (GPU or Mesa) or
  ``osmesa``; without one the run says so in one line and goes on.
"""

from __future__ import annotations

import argparse
import functools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Rectangle

from crl.envs.maze import MazeLayout

VIDEO_SIZE = (384, 512)  # height, width: multiples of 16, as video codecs want


def rollout(trainer, params: Any, key: jax.Array, episodes: int) -> dict[str, Any]:
    """One episode of the deterministic policy on ``episodes`` fresh eval envs.

    Returns host arrays ``obs`` ``[T, episodes, obs]``, ``alive`` ``[T, episodes]`` (the step
    belongs to the first episode of its env) and ``pipeline``: the physics states of the first
    env, ``[T, ...]`` (None for envs without a Brax pipeline)."""
    env = trainer.eval_env

    def run(params, key):
        state = env.reset(jax.random.split(key, episodes))

        def step(carry, _):
            state, alive = carry
            following = env.step(state, trainer.act(params, state.obs, None))
            first_env = jax.tree.map(lambda x: x[0], state.pipeline_state)
            return (following, alive & (following.done == 0)), (state.obs, alive, first_env)

        carry = (state, jnp.ones(episodes, bool))
        _, (obs, alive, pipeline) = jax.lax.scan(step, carry, None,
                                                 trainer.config.episode_length)
        return {"obs": obs, "alive": alive, "pipeline": pipeline}

    compiled = jax.jit(run).lower(params, key).compile(
        compiler_options=trainer.compiler_options)
    return jax.device_get(compiled(params, key))


def draw_walls(ax: Axes, layout: MazeLayout, scale: float) -> None:
    """The wall cells of a maze, world y across and world x down the (inverted) vertical axis:
    every top view of a maze (crl.render, crl.viz) draws it so, so that rows read as in
    mazes.txt and pictures of one maze agree."""
    for i, j in zip(*np.nonzero(layout.walls), strict=True):
        ax.add_patch(Rectangle((j * scale - scale / 2, i * scale - scale / 2), scale, scale,
                               color="0.35"))


def plot_paths(file: Path, trajectories: dict[str, Any], goal_env, success_radius: float,
               title: str) -> None:
    """Top view of every episode's achieved goal; the axes follow mazes.txt (rows down)."""
    obs, alive = trajectories["obs"], trajectories["alive"]
    state_size, first_two = goal_env.state_size, list(goal_env.goal_indices[:2])
    fig = Figure(figsize=(6, 6))
    ax = fig.add_subplot()
    if hasattr(goal_env, "layout"):
        draw_walls(ax, goal_env.layout, goal_env.scale)
    reached = 0
    for episode in range(obs.shape[1]):
        steps = int(alive[:, episode].sum())
        path = obs[:steps, episode][:, first_two]
        goal = obs[0, episode, state_size:state_size + 2]
        reached += bool(np.any(np.linalg.norm(path - goal, axis=-1) < success_radius))
        (line,) = ax.plot(path[:, 1], path[:, 0], lw=1.5)
        ax.plot(path[0, 1], path[0, 0], "o", color=line.get_color())
        ax.plot(goal[1], goal[0], "*", ms=12, color=line.get_color())
        ax.add_patch(Circle((goal[1], goal[0]), success_radius, fill=False,
                            color=line.get_color()))
    ax.set_aspect("equal")
    ax.autoscale_view()
    ax.invert_yaxis()
    ax.set_xlabel(f"state[{first_two[1]}]")
    ax.set_ylabel(f"state[{first_two[0]}]")
    ax.set_title(f"{title}: {reached}/{obs.shape[1]} episodes reach the goal")
    fig.savefig(file, dpi=100, bbox_inches="tight")


def first_episode_states(trajectories: dict[str, Any]) -> list[Any]:
    steps = int(trajectories["alive"][:, 0].sum())
    return [jax.tree.map(lambda x, t=t: x[t], trajectories["pipeline"]) for t in range(steps)]


@functools.cache
def opengl_missing() -> str:
    """Why MuJoCo cannot render in this process ('' when it can). Asked once per process: after
    one failed ``mujoco.Renderer``, MuJoCo 4 aborts the process on the next attempt."""
    import mujoco

    model = mujoco.MjModel.from_xml_string("<mujoco><worldbody/></mujoco>")
    try:
        with warnings.catch_warnings():  # GLFW warns before it fails; the caller says why
            warnings.simplefilter("ignore")
            mujoco.Renderer(model, 16, 16).close()
    except Exception as error:  # no display, no EGL or OSMesa
        return type(error).__name__
    return ""


def write_video(file: Path, model, qpos: np.ndarray, focus: np.ndarray, fps: float,
                log: Callable[[str], None]) -> bool:
    """Render the MuJoCo ``model`` at each row of ``qpos`` into an MP4, the camera looking down
    at the box around the points ``focus`` ``[T, 3]``. Returns False, said in one line, when
    MuJoCo cannot make an OpenGL context."""
    import mujoco

    missing = opengl_missing()
    if missing:
        log(f"no OpenGL context for MuJoCo ({missing}), so no MP4; on a headless machine set "
            "MUJOCO_GL=egl or MUJOCO_GL=osmesa")
        return False
    import imageio.v3 as iio

    renderer = mujoco.Renderer(model, *VIDEO_SIZE)

    data = mujoco.MjData(model)
    low, high = focus.min(0), focus.max(0)
    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_FREE
    camera.lookat[:] = (low + high) / 2
    camera.distance = 1.2 * float(np.max(high - low)) + 6.0
    camera.elevation, camera.azimuth = -55.0, 90.0
    frames = []
    with renderer:
        for q in qpos:
            data.qpos[:] = q
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera)
            frames.append(renderer.render())
    iio.imwrite(file, np.stack(frames), fps=fps)
    return True


def render_policy(trainer, params: Any, out_dir: Path, epoch: int, key: jax.Array,
                  episodes: int = 8, log: Callable[[str], None] = print) -> list[Path]:
    """Roll out the deterministic policy and save the pictures this env allows; returns the
    files written."""
    from brax.io import html

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # On the host, then the default device: one process renders, whatever the run's mesh.
    trajectories = rollout(trainer, jax.device_get(params), key, episodes)
    goal_env, config = trainer.eval_env.unwrapped, trainer.config
    written = []
    stem = out_dir / f"epoch_{epoch}"
    if goal_env.goal_size >= 2:
        plot_paths(stem.with_suffix(".png"), trajectories, goal_env, trainer.success_radius,
                   f"{config.eval_env}, epoch {epoch}")
        written.append(stem.with_suffix(".png"))
    if trajectories["pipeline"] is not None and hasattr(goal_env, "sys"):
        states = first_episode_states(trajectories)
        stem.with_suffix(".html").write_text(html.render(goal_env.sys, states, colab=False))
        written.append(stem.with_suffix(".html"))
        qpos = np.stack([np.asarray(state.q) for state in states])
        torso = np.stack([np.asarray(state.x.pos[0]) for state in states])
        if write_video(stem.with_suffix(".mp4"), goal_env.sys.mj_model, qpos, torso,
                       1 / float(goal_env.dt), log):
            written.append(stem.with_suffix(".mp4"))
    log(f"rendered the epoch-{epoch} policy: {', '.join(str(f) for f in written) or 'nothing'}")
    return written


def main(argv: list[str] | None = None) -> None:
    from crl.evaluate import add_run_arguments, open_run_or_fail
    from crl.train import evaluation_key

    parser = argparse.ArgumentParser(prog="python -m crl.render", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: <run>/render)")
    args = parser.parse_args(argv)
    trainer, params, meta = open_run_or_fail(args)
    render_policy(trainer, params, args.out or Path(args.run) / "render", meta.epoch,
                  evaluation_key(trainer.config, meta.epoch), episodes=args.episodes or 8)


if __name__ == "__main__":
    main()
