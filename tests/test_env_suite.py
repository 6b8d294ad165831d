"""The environment suite: every Brax task resets, steps, reads its goal and scores success as
the paper's tasks do.

Compilation dominates on CPU, so each model compiles one program (a rollout of given start
states) that serves every assertion about every task on it, and compiles it with XLA's cheapest
settings: the rollouts are a few steps. Tasks that share a model (the arm's) differ only in how
episodes start, which the program takes as data.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from brax.envs.base import State
from jax.sharding import Mesh, PartitionSpec
from scipy import optimize

from crl import envs
from crl.envs import arm
from crl.envs.base import BraxGoalEnv, goal_distance
from crl.envs.maze import cell_centres
from crl.envs.wrappers import EpisodeBatch
from crl.train import FAST_COMPILE_OPTIONS

STEPS = 30
KEYS = jax.random.split(jax.random.PRNGKey(7), 2)


def compile_fast(fn: Callable, *args):
    return jax.jit(fn).lower(*args).compile(compiler_options=FAST_COMPILE_OPTIONS)


@dataclasses.dataclass
class Rollout:
    """Rows: reset from KEYS[0], again from KEYS[0], from KEYS[1], then the extra states given
    to the probe. ``obs``: [STEPS + 1, rows, obs]; ``done``: [STEPS, rows]."""

    obs: np.ndarray
    done: np.ndarray
    q: np.ndarray  # [STEPS + 1, rows, q]
    marker: np.ndarray  # world position of the goal marker, [STEPS + 1, rows, 3]


EXTRA_ROWS = 3  # on the goal, far from it, and a scene of the task's own


_ROLLOUTS: dict[str, Callable] = {}  # compiled rollouts by model


def compiled_rollout(env, model: str, q: jax.Array, qd: jax.Array) -> Callable:
    """The program rolling the states ``(q, qd)`` out with zero actions, compiled once for all
    the tasks on ``model``."""
    if model not in _ROLLOUTS:
        marker = env.sys.link_names.index(env.marker_body)

        def rollout(q, qd):
            pipeline_state = jax.vmap(env.pipeline_init)(q, qd)
            actions = jnp.zeros((q.shape[0], env.action_size))
            obs = jax.vmap(env.observe)(pipeline_state, actions)
            zero = jnp.zeros(q.shape[0])

            def step(state, _):
                state = jax.vmap(env.step)(state, actions)
                return state, (state.obs, state.done, state.pipeline_state.q,
                               state.pipeline_state.x.pos[:, marker])

            _, (obs_t, done_t, q_t, marker_t) = jax.lax.scan(
                step, State(pipeline_state, obs, zero, zero), None, STEPS)
            with_first = lambda x, xs: jnp.concatenate([x[None], xs])
            return (with_first(obs, obs_t), done_t, with_first(pipeline_state.q, q_t),
                    with_first(pipeline_state.x.pos[:, marker], marker_t))

        _ROLLOUTS[model] = compile_fast(rollout, q, qd)
    return _ROLLOUTS[model]


class Probe:
    """One env's resets (as ``BraxGoalEnv.reset`` does them: the physics of ``initial_q_qd``'s
    state, observed) and extra states, rolled out with zero actions by its model's program."""

    def __init__(self, name: str):
        self.name, self.env = name, envs.make_env(name)
        self.spec = envs.get_spec(name)
        env = self.env
        assert type(env).reset is BraxGoalEnv.reset  # what the resets here stand for
        keys = jnp.concatenate([KEYS[:1], KEYS])
        self._starts = compile_fast(jax.vmap(env.initial_q_qd), keys)(keys)
        q = jnp.tile(env.sys.init_q, (EXTRA_ROWS, 1))
        qd = jnp.zeros((EXTRA_ROWS, env.sys.qd_size()))
        self._compiled = compiled_rollout(env, TASKS[name].model or name,
                                          *self._with_starts(q, qd))
        self.resets = self(q, qd)
        self.reset_q = self.resets.q[0, 0]
        self.goal = self.resets.obs[0, 0, env.state_size:]
        self.achieved = self.resets.obs[0, 0, list(env.goal_indices)]

    def _with_starts(self, extra_q, extra_qd) -> tuple[jax.Array, jax.Array]:
        return tuple(jnp.concatenate([start, jnp.asarray(extra, jnp.float32)])
                     for start, extra in zip(self._starts, (extra_q, extra_qd), strict=True))

    def __call__(self, extra_q, extra_qd) -> Rollout:
        return Rollout(*map(np.asarray, self._compiled(*self._with_starts(extra_q, extra_qd))))

    def distance(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(goal_distance(obs, self.env.state_size, self.env.goal_indices))


def reacher_arm_angles(point: np.ndarray) -> np.ndarray:
    """Joint angles that put Reacher's fingertip (links 0.1 and 0.11) on ``point`` (x, y)."""
    first, second = 0.1, 0.11
    r2 = float(np.dot(point, point))
    elbow = np.arccos(np.clip((r2 - first**2 - second**2) / (2 * first * second), -1, 1))
    shoulder = np.arctan2(point[1], point[0]) - np.arctan2(second * np.sin(elbow),
                                                           first + second * np.cos(elbow))
    return np.array([shoulder, elbow])


def reacher_on_goal(probe: Probe, offset: float) -> np.ndarray:
    """Reacher's fingertip on the goal, or (any ``offset``) 0.2 m across from it."""
    q = probe.reset_q.copy()
    target = probe.goal[:2] if offset == 0 else np.array([-0.2 if probe.goal[0] > 0 else 0.2, 0])
    q[:2] = reacher_arm_angles(target)
    return q


def arm_effector_on_goal(probe: Probe, offset: float) -> np.ndarray:
    """The Panda's joint angles (found by least squares on MuJoCo's forward kinematics) that put
    link 7 on the goal, or (any ``offset``) 0.3 m below and nearer the base."""
    model = probe.env.sys.mj_model
    data = mujoco.MjData(model)
    joints = slice(REACH_JOINTS, REACH_JOINTS + 7)
    target = probe.goal - ([0.0, 0.3, 0.3] if offset else 0.0)

    def miss(angles):
        data.qpos[:] = probe.reset_q
        data.qpos[joints] = angles
        mujoco.mj_kinematics(model, data)
        return data.xpos[model.body("link7").id] - target

    q = probe.reset_q.copy()
    q[joints] = optimize.least_squares(miss, PANDA_START).x
    return q


def moved_onto_goal(probe: Probe, offset: float) -> np.ndarray:
    """KEYS[0]'s reset state with the agent (or object) moved onto its goal, then ``offset``
    further along x."""
    translation = TASKS[probe.name].translation
    if callable(translation):
        return translation(probe, offset)
    q = probe.reset_q.copy()
    shift = probe.goal - probe.achieved
    shift[0] += offset
    for axis, index in enumerate(translation):
        if index is not None:
            q[index] += shift[axis]
    return q


def into_wall(probe: Probe) -> tuple[np.ndarray, np.ndarray]:
    """The torso 0.1 inside the near face of the wall cell below the start cell, at rest."""
    env = probe.env
    (i, j), scale = env.layout.start, env.scale
    assert env.layout.walls[i + 1, j]
    q = probe.reset_q.copy()
    q[0], q[1] = (i + 0.5) * scale + 0.1, j * scale
    return q, np.zeros(env.sys.qd_size())


def pushed_out_of_the_wall(probe: Probe, rollout: Rollout) -> None:
    env = probe.env
    face = (env.layout.start[0] + 0.5) * env.scale
    torso_x = rollout.q[:, -1, 0]
    assert torso_x[-1] < face - 0.05, torso_x  # out of the wall, and it never went deeper
    assert np.max(torso_x) <= face + 0.1 + 1e-3, torso_x


def running_into_object(probe: Probe) -> tuple[np.ndarray, np.ndarray]:
    """The Ant 0.1 m short of touching the first object, running at it at 3 m/s."""
    env = probe.env
    q, qd = probe.reset_q.copy(), np.zeros(env.sys.qd_size())
    obj = q[15:17]
    direction = (obj - q[:2]) / np.linalg.norm(obj - q[:2])
    # torso radius 0.25, plus the ball's radius or the block's half-width
    reach = 0.25 + (0.5 if probe.name == "ant_ball" else 0.45 * env.scale)
    q[:2] = obj - (reach + 0.1) * direction
    qd[:2] = 3.0 * direction
    return q, qd


def object_moved(probe: Probe, rollout: Rollout) -> None:
    displacement = np.linalg.norm(rollout.q[-1, -1, 15:17] - rollout.q[0, -1, 15:17])
    assert displacement > 0.05, displacement


# The paper's arm tasks (scaling-crl envs/manipulation): the arm's start pose, and its model's
# q once Brax has fused the fixed base away: the cube's free joint, the goal marker's three
# slides, the seven arm joints, the two fingers (arm_reach: marker, arm joints).
PANDA_START = [1.571, 0.742, 0, -1.571, 0, 3.054, 1.449]
CUBE = (0, 1, 2)  # the cube's position in q, and in the state
ARM_JOINTS = 10  # joint 1's q (after the marker's 7, 8, 9)
REACH_JOINTS = 3
# Observations recorded from the paper's own model (its panda_push_easy.xml and panda_reach.xml,
# scaling-crl 8516075, meshes included, loaded by Brax 0.14.2, with the paper's MJX settings):
# the state after 0, 10 and 30 steps of the zero action (joint targets mid-range, gripper open)
# from the start pose, the cube (none in arm_reach) at (-0.1, 0.6, 0.07).
PAPER_PUSH = {
    0: [-0.1, 0.6, 0.07, 1.571, 0.742, 0.0, -1.571, 0.0, 3.054, 1.449, -0.000138, 0.678043,
        0.370831, 0.0, 0.0, 0.0, 0.08],
    10: [-0.1, 0.6, 0.029892, 1.5708, 0.751794, -0.000173, -0.909942, -0.000293, 1.254478,
         0.73503, 0.000077, 0.746771, 0.519819, 0.000093, 0.004772, 0.043819, 0.159229],
    30: [-0.099999, 0.600001, 0.029892, 1.570801, 0.751704, -0.000178, -0.903018, -0.000318,
         1.526352, 0.72435, 0.00007, 0.7529, 0.546263, 0.000008, 0.000005, 0.000004, 0.159997],
}
PAPER_REACH = {
    0: [1.571, 0.742, 0.0, -1.571, 0.0, 3.054, 1.449, -0.000138, 0.678043, 0.370831, 0.0, 0.0,
        0.0],
    10: [1.5708, 0.751741, -0.000173, -0.909895, -0.000293, 1.265308, 0.73502, 0.000077,
         0.747131, 0.520754, 0.000091, 0.005641, 0.046087],
    30: [1.570801, 0.751656, -0.000178, -0.90298, -0.000318, 1.526363, 0.72435, 0.00007,
         0.752888, 0.546318, 0.000007, 0.000005, 0.000004],
}


def paper_start(probe: Probe) -> tuple[np.ndarray, np.ndarray]:
    """The start the paper's observations above were recorded from, goal unchanged."""
    q = probe.reset_q.copy()
    if probe.name == "arm_reach":
        q[REACH_JOINTS:REACH_JOINTS + 7] = PANDA_START
    else:
        q[:7] = [-0.1, 0.6, 0.07, 1, 0, 0, 0]
        q[ARM_JOINTS:ARM_JOINTS + 9] = [*PANDA_START, 0.04, 0.04]
    return q, np.zeros(probe.env.sys.qd_size())


def as_the_paper_model(probe: Probe, rollout: Rollout) -> None:
    recorded = PAPER_REACH if probe.name == "arm_reach" else PAPER_PUSH
    for step, state in recorded.items():
        np.testing.assert_allclose(rollout.obs[step, -1, :probe.env.state_size], state,
                                   atol=2e-4, err_msg=f"step {step}")


def cube_sliding_into_the_wall(probe: Probe) -> tuple[np.ndarray, np.ndarray]:
    """The cube resting in the first bin 5 cm from its inner wall, sliding at it at 1.5 m/s."""
    q, qd = probe.reset_q.copy(), np.zeros(probe.env.sys.qd_size())
    q[:7] = [BIN_WALL_FACE - H - 0.05, 0.6, H, 1, 0, 0, 0]
    qd[0] = 1.5
    return q, qd


def cube_stopped_by_the_wall(probe: Probe, rollout: Rollout) -> None:
    x = rollout.q[:, -1, 0]
    face = BIN_WALL_FACE - H  # the cube's centre touching the wall
    # The soft contact lets the cube into the 1 cm wall for a step, never through it, and it
    # comes to rest against it.
    assert np.max(x) < face + 0.01, x
    assert abs(x[-1] - face) < 1e-3, x


H = 0.03  # the cube's centre resting on the table
# arm_binpick_hard's bins: the first's inner wall (centre x -0.3 + 0.19, 1 cm thick).
BIN_WALL_FACE = -0.3 + 0.19 - 0.005


def in_box(point: np.ndarray, low, high) -> bool:
    return bool(np.all((np.subtract(low, 1e-6) <= point) & (point <= np.add(high, 1e-6))))


def in_square(centre: tuple[float, float], half: float, z: float):
    """Checks a goal: (x, y) within ``half`` of ``centre``, at height ``z``."""
    return lambda env, g: in_box(g, (centre[0] - half, centre[1] - half, z),
                                 (centre[0] + half, centre[1] + half, z))


def arm_start(centre: tuple[float, float], half: float) -> Callable[[BraxGoalEnv, np.ndarray],
                                                                     bool]:
    """A reset observation with the cube upright 7 cm above the table, (x, y) within ``half`` of
    ``centre``, the arm in the paper's start pose and the fingers open (8 cm apart)."""
    def valid(env, obs: np.ndarray) -> bool:
        return (in_box(obs[list(CUBE)], (centre[0] - half, centre[1] - half, 0.07),
                       (centre[0] + half, centre[1] + half, 0.07))
                and np.allclose(obs[3:10], PANDA_START, atol=1e-6)
                and abs(obs[16] - 0.08) < 1e-5)
    return valid


def grasp_goal(env, goal: np.ndarray) -> bool:
    """crl's own: 0.1-0.2 m above a resting cube's centre, over the push-easy start square."""
    return in_box(goal, (-0.2, 0.5, H + 0.1), (0.0, 0.7, H + 0.2))


@dataclasses.dataclass(frozen=True)
class Task:
    """What the tests know about a task, independently of its code."""

    # q entries that translate the achieved goal along each goal axis, or, where none does (a
    # fingertip, an end effector), a function returning q with it on the goal or away from it
    translation: tuple[int | None, ...] | Callable[[Probe, float], np.ndarray]
    # the goal of an episode checked against the task's definition
    goal_is_valid: Callable[[envs.EnvSpec, np.ndarray], bool]
    # an extra state to roll out, and a check of its rollout
    scene: Callable[[Probe], tuple[np.ndarray, np.ndarray]] | None = None
    scene_check: Callable[[Probe, Rollout], None] | None = None
    random_goal: bool = True
    # a reset observation checked against the task's definition (where things start)
    start_is_valid: Callable[[BraxGoalEnv, np.ndarray], bool] | None = None
    # tasks naming one model share its compiled rollout (they differ only in their starts)
    model: str | None = None
    # the least distance any state can have from a goal, where some goals are out of reach
    closest_reach: Callable[[np.ndarray], float] = lambda goal: 0.0
    # how far below the goal its marker body may hang (spring joints are springs)
    marker_sag: float = 2e-3
    # the actions an agent gives, where they are not the model's actuators one for one
    action_size: int | None = None


def in_goal_cell(env, goal: np.ndarray) -> bool:
    centres = cell_centres(env.layout.goals, env.scale)
    return bool(np.min(np.max(np.abs(centres - goal[:2]), axis=1)) <= env.goal_noise + 1e-5)


def within_2m_past_a_goal_cell(env, goal: np.ndarray) -> bool:
    """ant_push's goals (the paper's): one of its two goal cells' centres plus at most 2 m on
    each axis."""
    past = goal[:2] - cell_centres(env.layout.goals, env.scale)
    return bool(np.any(np.all((past >= -1e-5) & (past <= 2 + 1e-5), axis=1)))


TASKS = {
    # Targets nearer the centre than the links' difference (0.11 - 0.1 m) cannot be touched:
    # one draw in twenty under the paper's radius law.
    "reacher": Task(reacher_on_goal, lambda env, g: np.hypot(g[0], g[1]) <= 0.2 + 1e-6
                    and abs(g[2] - 0.01) < 1e-5,
                    closest_reach=lambda g: max(0.0, 0.01 - float(np.hypot(g[0], g[1]))),
                    marker_sag=5e-3),  # the spring pipeline's marker hangs 4 mm low
    # The object rests at (0.45, -0.05, -0.275); easy goals are 0.25-0.55 m behind it.
    "pusher_easy": Task((8, 7, None), lambda env, g: -0.1 - 1e-6 <= g[0] <= 0.2 + 1e-6
                        and -0.25 - 1e-6 <= g[1] <= 0.15 + 1e-6 and abs(g[2] + 0.275) < 1e-5),
    "cheetah": Task((0,), lambda env, g: abs(g[0] - 5.0) < 1e-5, random_goal=False),
    "ant": Task((0, 1), lambda env, g: abs(np.hypot(*g) - 10.0) < 1e-3),
    "ant_ball": Task((15, 16), lambda env, g: abs(np.hypot(*g) - 5.0) < 1e-3,
                     running_into_object, object_moved),
    "ant_push": Task((0, 1), within_2m_past_a_goal_cell, running_into_object, object_moved),
    "ant_u_maze": Task((0, 1), in_goal_cell, into_wall, pushed_out_of_the_wall),
    "humanoid": Task((0, 1, 2), lambda env, g: 1.0 - 1e-5 <= np.hypot(g[0], g[1]) <= 5.0 + 1e-5
                     and abs(g[2] - 1.25) < 1e-5),
    "humanoid_u_maze": Task((0, 1, 2), lambda env, g: in_goal_cell(env, g)
                            and abs(g[2] - 1.25) < 1e-5, into_wall, pushed_out_of_the_wall),
    "arm_reach": Task(arm_effector_on_goal, lambda env, g: in_box(g, (-0.2, 0.3, 0.1),
                                                                  (0.2, 0.7, 0.5)),
                      paper_start, as_the_paper_model, action_size=4,
                      start_is_valid=lambda env, obs: np.allclose(obs[:7], PANDA_START)),
    "arm_grasp": Task(CUBE, grasp_goal, start_is_valid=arm_start((-0.1, 0.6), 0.1),
                      action_size=5, model="arm_table"),
    "arm_push_easy": Task(CUBE, in_square((0.1, 0.6), 0.1, H), paper_start, as_the_paper_model,
                          start_is_valid=arm_start((-0.1, 0.6), 0.1), action_size=5,
                          model="arm_table"),
    "arm_push_hard": Task(CUBE, in_square((0.25, 0.65), 0.25, H),
                          start_is_valid=arm_start((-0.25, 0.65), 0.25), action_size=5,
                          model="arm_table"),
    "arm_binpick_easy": Task(CUBE, in_square((0.17, 0.6), 0.09, H),
                             start_is_valid=arm_start((-0.15, 0.6), 0.09), action_size=5),
    "arm_binpick_hard": Task(CUBE, in_square((0.3, 0.6), 0.15, H), cube_sliding_into_the_wall,
                             cube_stopped_by_the_wall, start_is_valid=arm_start((-0.3, 0.6), 0.15),
                             action_size=5),
}


def probe_with_scenes(name: str) -> Probe:
    """The probe of ``name``, and its rollout of the resets plus the on-goal, far and scene
    states."""
    probe = Probe(name)
    task = TASKS[name]
    scene_q, scene_qd = (task.scene(probe) if task.scene
                         else (probe.reset_q, np.zeros(probe.env.sys.qd_size())))
    qd = np.zeros((EXTRA_ROWS, probe.env.sys.qd_size()))
    qd[2] = scene_qd
    radius = probe.spec.success_radius
    probe.rollout = probe(np.stack([moved_onto_goal(probe, 0.0),
                                    moved_onto_goal(probe, 10 * radius), scene_q]), qd)
    return probe


@pytest.fixture(scope="module", params=list(TASKS))
def probe(request) -> Probe:
    return probe_with_scenes(request.param)


def test_reset_and_step_shapes(probe):
    env, rollout = probe.env, probe.rollout
    assert env.action_size == (TASKS[probe.name].action_size or env.sys.act_size())
    assert rollout.obs.shape == (STEPS + 1, 3 + EXTRA_ROWS, env.observation_size)
    assert env.observation_size == env.state_size + len(env.goal_indices)
    assert max(env.goal_indices) < env.state_size


def test_goal_in_the_observation_is_the_commanded_goal(probe):
    env, rollout = probe.env, probe.rollout
    goals = rollout.obs[..., env.state_size:]
    # The goal stays put (the spring pipeline recomputes q from body positions: rounding), and
    # the marker body is drawn there (to within the sag of spring joints, which are springs).
    np.testing.assert_allclose(goals, np.broadcast_to(goals[0], goals.shape), atol=1e-5)
    task = TASKS[probe.name]
    np.testing.assert_allclose(goals, rollout.marker[..., list(env.goal_axes)],
                               atol=task.marker_sag)
    for goal in goals[0, :3]:
        assert task.goal_is_valid(env, goal), goal
    if task.random_goal:
        assert not np.allclose(goals[0, 0], goals[0, 2])  # another seed, another goal


def test_success_is_one_on_the_goal_and_zero_far_away(probe):
    radius = probe.spec.success_radius
    on_goal, far = probe.distance(probe.rollout.obs[0, 3:5])
    assert on_goal < TASKS[probe.name].closest_reach(probe.goal) + 0.05 * radius, on_goal
    assert far > radius, far


def test_zero_actions_from_reset_keep_the_state_finite(probe):
    rollout = probe.rollout
    assert np.all(np.isfinite(rollout.obs))
    assert not np.any(rollout.done[:, :3]), "a healthy start should not terminate at once"
    assert not np.allclose(rollout.obs[-1, 0], rollout.obs[0, 0])  # gravity and reset noise act


@pytest.mark.parametrize("probe", [name for name, task in TASKS.items() if task.start_is_valid],
                         indirect=True)
def test_episodes_start_as_the_task_says(probe):
    for obs in probe.rollout.obs[0, :3]:
        assert TASKS[probe.name].start_is_valid(probe.env, obs), obs


def test_same_seed_same_trajectory(probe):
    rollout = probe.rollout
    np.testing.assert_array_equal(rollout.obs[:, 0], rollout.obs[:, 1])
    np.testing.assert_array_equal(rollout.obs[:, :3], probe.resets.obs[:, :3])  # another call
    assert not np.allclose(rollout.obs[:, 0], rollout.obs[:, 2])


@pytest.mark.parametrize("probe", [name for name, task in TASKS.items() if task.scene],
                         indirect=True)
def test_walls_and_objects_touch_the_body(probe):
    """Maze walls push a body placed in them out; an Ant running into a ball or a block moves
    it; the arm moves as the paper's model does, and a bin's wall stops the cube."""
    TASKS[probe.name].scene_check(probe, probe.rollout)


@pytest.mark.parametrize("backend", sorted(set(envs.BACKENDS) - set(arm.BACKENDS)))
def test_the_arm_refuses_the_pipelines_it_does_not_run_on(backend):
    with pytest.raises(ValueError, match="run on mjx only"):
        envs.make_env("arm_reach", backend)


def varying(x: jax.Array) -> jax.Array:
    try:
        return jax.lax.pcast(x, ("data",), to="varying")
    except ValueError:  # already typed as differing between devices
        return x


@pytest.mark.parametrize("backend", envs.BACKENDS)
def test_every_pipeline_steps_episodes_under_shard_map(backend):
    """The trainer steps its envs inside ``shard_map``, whose type check rejects the solvers of
    the generalized and MJX pipelines unless the physics runs outside it: every pipeline must
    step there, with the same numbers as without ``shard_map``."""
    env = EpisodeBatch(envs.make_env("reacher", backend), episode_length=3)
    mesh = Mesh(np.asarray(jax.devices()[:1]), ("data",))

    def rollout(keys, actions, sharded):
        state = env.reset(keys)
        if sharded:  # as the trainer does: the env state differs between devices
            state = jax.tree.map(varying, state)

        def step(state, action):
            state = env.step(state, action)
            return state, (state.obs, state.info["traj_id"])

        return jax.lax.scan(step, state, actions)[1]

    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    actions = jax.random.uniform(jax.random.PRNGKey(1), (5, 2, env.action_size), minval=-1,
                                 maxval=1)
    sharded = jax.shard_map(lambda k, a: rollout(k, a, True), mesh=mesh,
                            in_specs=(PartitionSpec("data"), PartitionSpec(None, "data")),
                            out_specs=PartitionSpec(None, "data"))
    obs, traj_id = compile_fast(sharded, keys, actions)(keys, actions)
    assert np.all(np.isfinite(obs)) and obs.shape == (5, 2, env.observation_size)
    np.testing.assert_array_equal(traj_id[:, 0], [0, 0, 1, 1, 1])  # episodes restart
    if backend in ("generalized", "mjx"):
        plain_obs, _ = compile_fast(lambda k, a: rollout(k, a, False), keys, actions)(keys,
                                                                                    actions)
        np.testing.assert_allclose(obs, plain_obs, atol=1e-5)
