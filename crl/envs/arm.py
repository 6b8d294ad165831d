"""Goal-conditioned manipulation with a 7-DoF arm and a parallel gripper on a table, on MJX.

The arm is described here in MJCF from primitive shapes, since no arm model can be downloaded at
run time: a Panda-like chain of seven hinges (shoulder yaw, pitch and roll, elbow pitch, forearm
roll, wrist pitch, hand roll; 0.4 m upper arm and forearm) on a column standing on the table
(the plane z = 0), ending in a hand with two fingers on slide joints. Every joint has a position
servo: an action in [-1, 1] commands a joint angle (a finger's opening) across the joint's range,
and the middle of every range is the home pose (upper arm up, forearm forward, hand pointing
down, end effector at (0.4, 0, 0.57)), so the zero action holds it, with the fingers 4 cm apart:
closed on the 5 cm, 50 g cube, which is on a free joint. Only the finger pads and the palm
(capsules), the cube (a box), the table and the bin walls (boxes) collide.

Every goal is a position; success is within 0.1 m of it. Regions are intervals in metres, the
arm's base at the origin; ``H`` = 0.025 is the height of the cube's centre resting on the table.

- ``arm_reach``: goal = the end effector (between the finger pads) (x, y, z), uniform in the box
  x in [0.3, 0.6], y in [-0.25, 0.25], z in [0.1, 0.4]. The arm starts at home, the cube as in
  ``arm_grasp`` (it is in the way, nothing more).
- ``arm_grasp``: goal = the cube (x, y, z), 0.12 to 0.2 m straight above the cube's start: pick
  it up. The cube starts on the table in x in [0.4, 0.6], y in [-0.15, 0.15]; the arm at home.
- ``arm_push_easy``: goal = the cube, on the table (z = H) in x in [0.45, 0.55], y in
  [0.075, 0.125]; the cube starts in x in [0.45, 0.55], y in [-0.125, -0.075] (0.15 to 0.27 m
  from the goal); the arm at home.
- ``arm_push_hard``: goal = the cube, on the table in x in [0.35, 0.6], y in [0.15, 0.3]; the cube
  starts in x in [0.35, 0.6], y in [-0.3, -0.15] (0.3 to 0.65 m from the goal); the arm at home.
- ``arm_binpick_easy``: two 20 cm square bins with 8 cm walls, side by side along y and sharing
  the middle wall. The cube starts in the first (x in [0.45, 0.55], y in [-0.16, -0.06]), the
  goal is on the floor of the second (x in [0.45, 0.55], y in [0.06, 0.16], z = H). The gripper
  starts open around the cube (end effector on the cube's centre, pads 7 cm apart): close, lift,
  carry, put down.
- ``arm_binpick_hard``: the same, the arm starting at home.

The state is q and qd of the arm, the fingers and the cube (position and quaternion; linear and
angular velocity), then the end effector's position and the opening between the finger pads.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import jax
import jax.numpy as jnp
import numpy as np
from brax.base import Transform

from crl.envs.base import BraxGoalEnv
from crl.envs.model import (
    OBSTACLE_BIT,
    PipelineSettings,
    add_goal_marker,
    add_walls,
    pushable_geom,
    to_xml,
)

# Brax's spring and positional pipelines blow the servoed arm up, and the generalized pipeline
# flings a cube held between the fingers; none of them models the gravity compensation that
# keeps the goal marker up. (Measured with Brax 0.14.2.)
BACKENDS = ("mjx",)
# JaxGCRL's arm tasks' settings: 10 ms physics steps (Newton, 4 iterations), 4 per env step. The
# spring fields are unused: the arm runs on MJX only.
ARM_SETTINGS = PipelineSettings(n_frames=4, spring_timestep=0.01, spring_n_frames=4)

SHOULDER_HEIGHT = 0.333  # the shoulder's pitch axis above the table
LINK = 0.4  # upper arm and forearm: shoulder to elbow, elbow to wrist
TCP = 0.165  # the end effector: from the wrist's pitch axis to between the finger pads
CUBE_HALF = 0.025
FINGER_RANGE = (0.0, 0.04)  # a pad's distance from the hand's centre line
OPEN = 0.035  # a pad's distance when the gripper starts around the cube (pads 7 cm apart)
PAD_RADIUS = 0.008
# (name, axis, range, servo gain, damping, torque limit): Panda's ranges, the elbow's mirrored
# (ours bends the other way) and the wrist pitch's widened to centre on the home pose, so that
# the middle of every range is the home pose; Panda's torque limits, which with the damping hold
# the joints' speeds near Panda's (about 2 rad/s).
ARM_JOINTS = (
    ("shoulder_yaw", "0 0 1", (-2.9, 2.9), 300, 30, 87),
    ("shoulder_pitch", "0 1 0", (-1.76, 1.76), 500, 40, 87),
    ("shoulder_roll", "0 0 1", (-2.9, 2.9), 200, 15, 87),
    ("elbow", "0 1 0", (0.07, 3.07), 500, 40, 87),
    ("forearm_roll", "0 0 1", (-2.9, 2.9), 100, 8, 12),
    ("wrist_pitch", "0 1 0", (-0.5, 3.64), 100, 8, 12),
    ("hand_roll", "0 0 1", (-2.9, 2.9), 50, 5, 12),
)
FINGER_GAIN, FINGER_DAMPING = 400, 10
HOME = np.array([(low + high) / 2 for _, _, (low, high), *_ in ARM_JOINTS], np.float32)
HOME_EFFECTOR = (LINK, 0.0, SHOULDER_HEIGHT + LINK - TCP)
ARM_Q = 9  # 7 hinges and 2 fingers; then the cube's free joint, then the goal marker's 3 slides
CUBE_Q, CUBE_QD = 7, 6
# Two bins side by side along y, sharing the middle wall: interior half-size, wall half-thickness
# and half-height, and the bins' centre x.
BIN_HALF, WALL, WALL_HALF_HEIGHT, BIN_X = 0.1, 0.01, 0.04, 0.5
# The pads and the palm touch the table (bit 1), the walls and the cube (OBSTACLE_BIT, as
# model.pushable_geom makes the cube); the arm's links touch nothing.
GRIPPER_CONTACT = f'contype="1" conaffinity="{OBSTACLE_BIT}"'


@dataclasses.dataclass(frozen=True)
class Task:
    """How an episode starts: the cube uniform in ``cube`` ((x_low, x_high), (y_low, y_high)) on
    the table, the goal uniform in the box ``goal`` ((low x, y, z), (high x, y, z)), measured from
    the cube's start if ``goal_from_cube``; the arm at home, or open around the cube if
    ``start_at_cube``."""

    cube: tuple[tuple[float, float], tuple[float, float]]
    goal: tuple[tuple[float, float, float], tuple[float, float, float]]
    goal_from_cube: bool = False
    start_at_cube: bool = False
    bins: bool = False


TABLE_CUBE = ((0.4, 0.6), (-0.15, 0.15))
BIN_CUBE = ((0.45, 0.55), (-0.16, -0.06))
BIN_GOAL = ((0.45, 0.06, CUBE_HALF), (0.55, 0.16, CUBE_HALF))
TASKS = {
    "reach": Task(TABLE_CUBE, ((0.3, -0.25, 0.1), (0.6, 0.25, 0.4))),
    "grasp": Task(TABLE_CUBE, ((0.0, 0.0, 0.12), (0.0, 0.0, 0.2)), goal_from_cube=True),
    "push_easy": Task(((0.45, 0.55), (-0.125, -0.075)),
                      ((0.45, 0.075, CUBE_HALF), (0.55, 0.125, CUBE_HALF))),
    "push_hard": Task(((0.35, 0.6), (-0.3, -0.15)),
                      ((0.35, 0.15, CUBE_HALF), (0.6, 0.3, CUBE_HALF))),
    "binpick_easy": Task(BIN_CUBE, BIN_GOAL, start_at_cube=True, bins=True),
    "binpick_hard": Task(BIN_CUBE, BIN_GOAL, bins=True),
}


def _vector(*values: float) -> str:
    return " ".join(f"{v:g}" for v in values)


def _link(index: int, height: float, geom: str) -> str:
    """Opens the body of hinge ``index``, ``height`` above the previous one, with one geom."""
    name, axis, joint_range, _, damping, _ = ARM_JOINTS[index]
    return (f'<body name="link{index + 1}" pos="0 0 {height:g}"><joint name="{name}" '
            f'axis="{axis}" range="{_vector(*joint_range)}" damping="{damping}"/>{geom}')


def _capsule(bottom: float, top: float, radius: float, mass: float) -> str:
    return (f'<geom type="capsule" fromto="0 0 {bottom:g} 0 0 {top:g}" size="{radius:g}" '
            f'mass="{mass:g}"/>')


def _finger(side: str, sign: int) -> str:
    """A finger sliding along ±y: a vertical capsule pad whose inner side is at the joint's
    position (around the end effector's height), hung from the palm by a thin box."""
    y = sign * PAD_RADIUS
    return (f'<body name="{side}_finger"><joint name="{side}_finger" type="slide" '
            f'axis="0 {sign} 0" range="{_vector(*FINGER_RANGE)}" damping="{FINGER_DAMPING}" '
            f'armature="0.02"/><geom name="{side}_pad" type="capsule" size="{PAD_RADIUS}" '
            f'fromto="{_vector(0, y, TCP - 0.01, 0, y, TCP + 0.01)}" mass="0.05" '
            f'rgba="0.2 0.2 0.2 1" {GRIPPER_CONTACT}/><geom type="box" '
            f'pos="{_vector(0, sign * (PAD_RADIUS + 0.004), TCP - 0.03)}" '
            f'size="0.008 0.004 0.02" mass="0.02"/></body>')


def arm_model() -> ET.Element:
    """The arm and the cube on the table (no walls, no goal marker)."""
    servos = "".join(f'<position joint="{name}" kp="{gain}" ctrlrange="{_vector(*joint_range)}" '
                     f'forcerange="{_vector(-torque, torque)}"/>'
                     for name, _, joint_range, gain, _, torque in ARM_JOINTS)
    servos += "".join(f'<position joint="{side}_finger" kp="{FINGER_GAIN}" '
                      f'ctrlrange="{_vector(*FINGER_RANGE)}"/>' for side in ("left", "right"))
    cube = pushable_geom(type="box", size=_vector(*[CUBE_HALF] * 3), mass="0.05",
                         rgba="0.9 0.2 0.2 1")
    palm_height = TCP - 0.045  # 5 mm above a cube held with the end effector on its centre
    return ET.fromstring(f"""
<mujoco model="arm">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="0.01" iterations="4" ls_iterations="8"/>
  <default>
    <geom contype="0" conaffinity="0" rgba="0.85 0.85 0.9 1"/>
    <joint armature="0.1"/>
  </default>
  <worldbody>
    <light pos="0 0 3" dir="0 0 -1" directional="true"/>
    <geom name="table" type="plane" size="1 1 0.05" rgba="0.6 0.5 0.4 1" contype="1"
          conaffinity="1"/>
    <geom name="column" type="cylinder" size="0.07 0.05" pos="0 0 0.05"/>
    {_link(0, 0.1, _capsule(0.0, 0.2, 0.06, 2.0))}
    {_link(1, SHOULDER_HEIGHT - 0.1, '<geom type="sphere" size="0.07" mass="1"/>')}
    {_link(2, 0.0, _capsule(0.07, LINK - 0.07, 0.05, 1.5))}
    {_link(3, LINK, '<geom type="sphere" size="0.06" mass="0.7"/>')}
    {_link(4, 0.0, _capsule(0.06, LINK - 0.06, 0.045, 1.2))}
    {_link(5, LINK, '<geom type="sphere" size="0.05" mass="0.5"/>')}
    {_link(6, 0.0, _capsule(0.05, 0.1, 0.04, 0.3))}
      <geom name="palm" type="capsule" size="0.015" mass="0.2" rgba="0.2 0.2 0.2 1"
            fromto="{_vector(0, -0.05, palm_height, 0, 0.05, palm_height)}" {GRIPPER_CONTACT}/>
      {_finger("left", 1)}
      {_finger("right", -1)}
    {"</body>" * len(ARM_JOINTS)}
    <body name="cube" pos="{_vector(0.5, 0, CUBE_HALF)}">
      <freejoint/>
      <geom name="cube" {" ".join(f'{k}="{v}"' for k, v in cube.items())}/>
    </body>
  </worldbody>
  <actuator>{servos}</actuator>
</mujoco>""")


def bin_walls() -> list[tuple[float, float, float, float]]:
    """The two bins' five walls, (centre x, centre y, half x, half y): two long walls along y,
    two end walls and the shared middle wall."""
    end_y = 2 * BIN_HALF + 2 * WALL
    long_x = BIN_HALF + WALL
    return [(BIN_X - long_x, 0.0, WALL, end_y + WALL), (BIN_X + long_x, 0.0, WALL, end_y + WALL),
            (BIN_X, -end_y, BIN_HALF, WALL), (BIN_X, end_y, BIN_HALF, WALL),
            (BIN_X, 0.0, BIN_HALF, WALL)]


def pose_above(point: jax.Array) -> jax.Array:
    """The arm's joint angles that put the end effector on ``point`` (x, y, z) with the hand
    pointing down and the fingers along y. The elbow bends as far as the point needs (a point
    out of reach gets the arm stretched towards it)."""
    yaw = jnp.arctan2(point[1], point[0])
    across = jnp.hypot(point[0], point[1])
    up = point[2] + TCP - SHOULDER_HEIGHT  # the wrist is TCP above the end effector
    elbow = 2 * jnp.arccos(jnp.clip(jnp.hypot(across, up) / (2 * LINK), 0.0, 1.0))
    shoulder = jnp.arctan2(across, up) - elbow / 2
    wrist = jnp.pi - shoulder - elbow  # the hand points straight down
    return jnp.stack([yaw, shoulder, 0.0, elbow, 0.0, wrist, yaw])  # hand roll undoes the yaw


class Arm(BraxGoalEnv):
    """One of ``TASKS`` (see the module's docstring): the arm's model, with the bins for a bin
    pick, and how its episodes start."""

    goal_axes = (0, 1, 2)
    state_size = 2 * ARM_Q + CUBE_Q + CUBE_QD + 3 + 1

    def __init__(self, task: str = "reach", backend: str = "mjx"):
        if task not in TASKS:
            raise ValueError(f"task={task!r}; valid: {', '.join(TASKS)}")
        if backend not in BACKENDS:  # before anything is built or compiled
            raise ValueError(f"backend={backend!r}: the arm tasks run on "
                             f"{', '.join(BACKENDS)} only")
        self.task = TASKS[task]
        root = arm_model()
        if self.task.bins:
            add_walls(root, bin_walls(), WALL_HALF_HEIGHT)
        # Gravity compensation holds a goal in the air where it is drawn.
        add_goal_marker(root, (0, 0, 0), "xyz", radius=0.02).set("gravcomp", "1")
        super().__init__(to_xml(root), backend, ARM_SETTINGS)
        effector = 2 * ARM_Q + CUBE_Q + CUBE_QD
        self.goal_indices = ((effector, effector + 1, effector + 2) if task == "reach"
                             else (ARM_Q, ARM_Q + 1, ARM_Q + 2))
        self.goal_name = "end effector (x, y, z)" if task == "reach" else "cube (x, y, z)"
        self._hand = self.sys.link_names.index(f"link{len(ARM_JOINTS)}")
        self._effector = Transform.create(pos=jnp.array([0.0, 0.0, TCP]))

    def initial_q_qd(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        cube_key, goal_key = jax.random.split(rng)
        task = self.task
        cube_region = jnp.array(task.cube)
        cube = jnp.append(jax.random.uniform(cube_key, (2,), minval=cube_region[:, 0],
                                             maxval=cube_region[:, 1]), CUBE_HALF)
        goal = jax.random.uniform(goal_key, (3,), minval=jnp.array(task.goal[0]),
                                  maxval=jnp.array(task.goal[1]))
        if task.goal_from_cube:
            goal = goal + cube
        if task.start_at_cube:
            arm = jnp.concatenate([pose_above(cube), jnp.full(2, OPEN)])
        else:
            arm = jnp.concatenate([HOME, jnp.full(2, sum(FINGER_RANGE) / 2)])
        q = jnp.concatenate([arm, cube, jnp.array([1.0, 0.0, 0.0, 0.0]), goal])
        return q, jnp.zeros(self.sys.qd_size())

    def observe_state(self, pipeline_state, action: jax.Array) -> jax.Array:
        q, qd = pipeline_state.q, pipeline_state.qd
        effector = pipeline_state.x.take(self._hand).do(self._effector).pos
        opening = q[ARM_Q - 2] + q[ARM_Q - 1]
        return jnp.concatenate([q[:ARM_Q + CUBE_Q], qd[:ARM_Q + CUBE_QD], effector,
                                opening[None]])
