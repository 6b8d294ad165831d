"""The paper's manipulation tasks: a Franka Emika Panda arm and a cube on a table, on MJX.

The physics is that of the paper's code (scaling-crl ``envs/manipulation``, whose model is
adapted from MuJoCo Menagerie's Panda), written out here in MJCF: Panda's seven links with
their masses and inertias, joint ranges, armature and damping, its position servos (gains,
biases and force limits) and the two fingers on slide joints tied by an equality constraint.
Only primitive shapes collide (the hand's capsule, the fingers' boxes, the cube, the table and
the bins' walls), and only in the listed contact pairs; the paper's meshes are drawn and never
touched, so each link is drawn here as a capsule instead, which changes nothing that moves.
Physics steps of 2 ms (implicit-fast integration, Newton with 6 iterations and 12 line-search
steps), 25 per env step.

An action has four joint targets and, but for ``arm_reach``, the gripper: joints 1, 2, 4 and 6
are commanded across the ranges the paper's code gives them (the arm stays in front of its
base), joints 3, 5 and 7 are held, and the gripper closes fully for a positive last entry and
opens fully otherwise.

The state (17 numbers; 13 for ``arm_reach``, which has no cube and no fingers): the cube's
position, the seven joint angles, the position and velocity of link 7 (the hand's base: the
"end effector" of the paper's code), and the distance between the fingers' frames. The goal is
the cube's position (the end effector's for ``arm_reach``); success is within 0.1 m of it.

Every episode starts with the arm in the same pose, fingers open, and the cube 4 cm above the
table; the cube's (x, y) and the goal's are drawn uniformly in squares (the table is z = 0, the
arm's base at the origin, the cube 6 cm across):

- ``arm_reach``: goal uniform in the cube of half-side 0.2 m around (0, 0.5, 0.3).
- ``arm_push_easy``: cube within 0.1 m of (-0.1, 0.6), goal within 0.1 m of (0.1, 0.6).
- ``arm_push_hard``: cube within 0.25 m of (-0.25, 0.65), goal within 0.25 m of (0.25, 0.65).
- ``arm_binpick_easy``: two bins (walls 6.6 cm high, 27 cm inside) centred at x = -0.17 and
  0.17, y = 0.6; cube within 0.09 m of (-0.15, 0.6), goal within 0.09 m of (0.17, 0.6).
- ``arm_binpick_hard``: bins 37 cm inside at x = -0.3 and 0.3; cube within 0.15 m of
  (-0.3, 0.6), goal within 0.15 m of (0.3, 0.6).
- ``arm_grasp`` (crl's own, not the paper's: its grasp task commands the fingertips, a goal
  that follows the cube): the push-easy cube and a goal 0.1 to 0.2 m straight above the cube's
  start: pick it up.

Goals on the table are at the height of a resting cube's centre (3 cm).
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import jax
import jax.numpy as jnp
import numpy as np

from crl.envs.base import BraxGoalEnv
from crl.envs.model import PipelineSettings, add_goal_marker, to_xml

# Brax's other pipelines model neither the servos' affine bias nor gravity compensation.
BACKENDS = ("mjx",)
ARM_SETTINGS = PipelineSettings(n_frames=25, spring_timestep=0.002, spring_n_frames=25)

CUBE_HALF = 0.03
CUBE_DROP = 0.07  # the cube's centre at the start, above the table
GOAL_HEIGHT = 0.03  # a goal on the table: a resting cube's centre
# The links: (position and orientation in the parent's frame, mass, centre of mass, full inertia
# (xx yy zz xy xz yz), joint range or None). Menagerie's Panda, as the paper's code loads it:
# Brax's loader fuses the fixed base into the world and so drops the base's default class,
# which gave every arm joint armature, damping and a range. The paper's arm joints have none of
# those but the ranges written on joints 2, 4 and 6 themselves; joints 1, 3, 5 and 7 are free
# to turn, and their servos take targets in DEFAULT_RANGE.
DEFAULT_RANGE = (-2.8973, 2.8973)
LINKS = (
    ("0 0 0.333", None, 4.970684, "0.003875 0.002081 -0.04762",
     "0.70337 0.70661 0.009117 -0.000139 0.006772 0.019169", None),
    ("0 0 0", "1 -1 0 0", 0.646926, "-0.003141 -0.02872 0.003495",
     "0.007962 0.02811 0.025995 -0.003925 0.010254 0.000704", (-1.7628, 1.7628)),
    ("0 -0.316 0", "1 1 0 0", 3.228604, "0.027518 0.039252 -0.066502",
     "0.037242 0.036155 0.01083 -0.004761 -0.011396 -0.012805", None),
    ("0.0825 0 0", "1 1 0 0", 3.587895, "-0.05317 0.104419 0.027454",
     "0.025853 0.019552 0.028323 0.007796 -0.001332 0.008641", (-3.0718, -0.0698)),
    ("-0.0825 0.384 0", "1 -1 0 0", 1.225946, "-0.011953 0.041065 -0.038437",
     "0.035549 0.029474 0.008627 -0.002117 -0.004037 0.000229", None),
    ("0 0 0", "1 1 0 0", 1.666555, "0.060149 -0.014117 -0.010517",
     "0.001964 0.004354 0.005433 0.000109 -0.001158 0.000341", (-0.0175, 3.7525)),
    ("0.088 0 0", "1 1 0 0", 0.735522, "0.010517 -0.004252 0.061597",
     "0.012516 0.010027 0.004815 -0.000428 -0.001196 -0.000741", None),
)
HAND = ("0 0 0.107", "0.9238795 0 0 -0.3826834")  # in link 7's frame
# Position servos: (gain, the bias's position and velocity terms, force limit). The gains of
# joints 3 to 7 differ from their biases' position terms in the paper's model, so those joints
# settle short of their targets; kept, as it is the paper's physics.
SERVOS = ((4500, -4500, -450, 87), (4500, -4500, -450, 87), (2000, -3500, -350, 87),
          (2000, -3500, -350, 87), (1000, -2000, -200, 12), (1000, -2000, -200, 12),
          (1000, -2000, -200, 12))
# The gripper's servo maps 0..255 onto 0..0.08 m of finger travel (0.08 * 500 / 255).
FINGER_SERVO = (0.15686, -500, -50, 500)
FINGER_CLOSED, FINGER_OPEN = 0.0, 255.0
# The commanded range of joints 1 to 7 (3, 5 and 7 held where their range is one value).
TARGET_LOW = np.array([0.3491, 0, 0, -3.0718, 0, 2.3562, 1.4487], np.float32)
TARGET_HIGH = np.array([2.7925, 1.48353, 0, -0.0698, 0, 3.7525, 1.4487], np.float32)
COMMANDED_JOINTS = (0, 1, 3, 5)
START_POSE = np.array([1.571, 0.742, 0, -1.571, 0, 3.054, 1.449], np.float32)
FINGERS_OPEN = 0.04  # each finger's opening at the start


@dataclasses.dataclass(frozen=True)
class Task:
    """Where the cube and the goal are drawn: uniform within ``cube_noise`` of ``cube`` (x, y)
    and ``goal_noise`` of ``goal`` (x, y, or x, y, z if ``goal_noise_3d``); a goal ``lift``
    range above the cube's start instead of ``goal`` if given. ``bins``: the centre x of the
    two bins and their inside half-width; ``pads``: the coloured squares drawn under the start
    and goal regions ((x, y), half-width), which nothing touches."""

    goal: tuple[float, ...]
    goal_noise: float
    cube: tuple[float, float] | None = None
    cube_noise: float = 0.0
    goal_noise_3d: bool = False
    lift: tuple[float, float] | None = None
    bins: tuple[float, float] | None = None
    pads: tuple[tuple[tuple[float, float], float], ...] = ()


TASKS = {
    "reach": Task((0.0, 0.5, 0.3), 0.2, goal_noise_3d=True, pads=(((0.0, 0.5), 0.2),)),
    "push_easy": Task((0.1, 0.6), 0.1, (-0.1, 0.6), 0.1,
                      pads=(((-0.1, 0.6), 0.1), ((0.1, 0.6), 0.1))),
    "push_hard": Task((0.25, 0.65), 0.25, (-0.25, 0.65), 0.25,
                      pads=(((-0.25, 0.65), 0.25), ((0.25, 0.65), 0.25))),
    "binpick_easy": Task((0.17, 0.6), 0.09, (-0.15, 0.6), 0.09, bins=(0.17, 0.135)),
    "binpick_hard": Task((0.3, 0.6), 0.15, (-0.3, 0.6), 0.15, bins=(0.3, 0.185)),
    "grasp": Task((0.0, 0.0), 0.0, (-0.1, 0.6), 0.1, lift=(0.1, 0.2),
                  pads=(((-0.1, 0.6), 0.1),)),
}
BIN_Y, BIN_WALL_HALF_HEIGHT, BIN_WALL_HALF_THICKNESS = 0.6, 0.033, 0.005


def _attributes(**values) -> str:
    return " ".join(f'{key}="{value}"' for key, value in values.items() if value is not None)


def _link(index: int) -> str:
    """Opens link ``index + 1``'s body: its inertia, its hinge and a capsule drawn to the next
    body's origin."""
    pos, quat, mass, com, inertia, joint_range = LINKS[index]
    limits = f' range="{joint_range[0]} {joint_range[1]}"' if joint_range else ""
    child = LINKS[index + 1][0] if index + 1 < len(LINKS) else HAND[0]
    drawn = (f'<geom type="sphere" size="0.06" {_DRAWN}/>' if child == "0 0 0" else
             f'<geom type="capsule" fromto="0 0 0 {child}" size="0.05" {_DRAWN}/>')
    return (f'<body {_attributes(name=f"link{index + 1}", pos=pos, quat=quat)}>'
            f'<inertial mass="{mass}" pos="{com}" fullinertia="{inertia}"/>'
            f'<joint name="joint{index + 1}"{limits}/>'
            f'{drawn}')


_DRAWN = 'contype="0" conaffinity="0" rgba="0.9 0.9 0.92 1"'
_FINGER = ('<inertial mass="0.015" pos="0 0 0" diaginertia="2.375e-6 2.375e-6 7.5e-7"/>'
           '<joint name="{joint}" type="slide" axis="0 1 0" range="0 0.08" armature="0.1" '
           'damping="5"/>'
           '<geom name="{geom}" type="box" size="0.015 0.005 0.04" pos="0 0.0055 0.035" '
           'friction="10 0.005 0.0001" contype="0" conaffinity="0" rgba="0.25 0.25 0.25 1"/>')


def _servo(name: str, joint: str, ctrl_range: tuple[float, float], gain: float, bias: float,
           damping: float, force: float) -> str:
    return (f'<general name="{name}" joint="{joint}" dyntype="none" biastype="affine" '
            f'ctrlrange="{ctrl_range[0]} {ctrl_range[1]}" forcerange="{-force} {force}" '
            f'gainprm="{gain}" biasprm="0 {bias} {damping}"/>')


def bin_walls(centre_x: float, inside: float) -> list[tuple[str, tuple[float, ...],
                                                            tuple[float, ...]]]:
    """The bins' walls, (name, centre, half-sizes): four around each bin, the bins centred at
    x = ±``centre_x``, ``inside`` the inside half-width; the walls along x reach over the
    others' ends."""
    thickness, height = BIN_WALL_HALF_THICKNESS, BIN_WALL_HALF_HEIGHT
    offset = inside + thickness  # a wall's centre from its bin's
    walls = []
    for bin_name, x in (("binA", -centre_x), ("binB", centre_x)):
        for index, (dx, dy, size) in enumerate((
                (0, -offset, (inside + 2 * thickness, thickness)),
                (0, offset, (inside + 2 * thickness, thickness)),
                (offset, 0, (thickness, inside)),
                (-offset, 0, (thickness, inside)))):
            walls.append((f"{bin_name}{index + 1}", (x + dx, BIN_Y + dy, height),
                          (*size, height)))
    return walls


def panda_model(task: Task, gripper: bool = True) -> ET.Element:
    """The arm (with fingers if ``gripper``; then also the cube) on the table, and ``task``'s
    bins and pads; no goal marker."""
    hand = (f'<body name="hand" pos="{HAND[0]}" quat="{HAND[1]}">'
            '<geom name="hand_geom" type="capsule" size="0.04 0.06" pos="0 0 0.035" '
            'quat="1 1 0 0" contype="0" conaffinity="0" rgba="1 1 1 1"/>')
    if gripper:
        hand += ('<body name="left_finger" pos="0 0 0.0584">'
                 + _FINGER.format(joint="finger_joint1", geom="left_finger_geom") + "</body>"
                 '<body name="right_finger" pos="0 0 0.0584" quat="0 0 0 1">'
                 + _FINGER.format(joint="finger_joint2", geom="right_finger_geom") + "</body>")
    arm = ("".join(_link(index) for index in range(len(LINKS))) + hand + "</body>"
           + "</body>" * len(LINKS))
    servos = "".join(
        _servo(f"actuator{index + 1}", f"joint{index + 1}", LINKS[index][5] or DEFAULT_RANGE,
               gain, bias, damping, force)
        for index, (gain, bias, damping, force) in enumerate(SERVOS))
    walls = bin_walls(*task.bins) if task.bins else []
    hand_touches = ["table_geom"] + [name for name, *_ in walls]
    pairs = [("table_geom", "hand_geom")]
    scenery = "".join(
        f'<geom type="box" pos="{x} {y} 0.0005" size="{half} {half} 0.0005" contype="0" '
        f'conaffinity="0" rgba="{colour}"/>'
        for ((x, y), half), colour in zip(task.pads, ("0 0.2 0.8 1", "0.8 0 0 1"), strict=False))
    scenery += "".join(
        f'<geom name="{name}" type="box" pos="{_join(pos)}" size="{_join(size)}" contype="0" '
        f'conaffinity="0" rgba="0.3 0.3 0.8 1"/>' for name, pos, size in walls)
    if gripper:
        servos += "".join(_servo(f"actuator{8 + side}", f"finger_joint{1 + side}", (0, 255),
                                 *FINGER_SERVO) for side in (0, 1))
        fingers = ("left_finger_geom", "right_finger_geom")
        pairs = ([("cube_geom", "table_geom"), ("cube_geom", "hand_geom")]
                 + [("cube_geom", finger) for finger in fingers]
                 + [("cube_geom", name) for name, *_ in walls]
                 + [(other, "hand_geom") for other in hand_touches]
                 + [(other, finger) for finger in fingers for other in hand_touches]
                 + [fingers])
        cube_x, cube_y = task.cube
        scenery += (f'<body name="cube" pos="{cube_x} {cube_y} {CUBE_DROP}"><freejoint/>'
                    f'<geom name="cube_geom" type="box" size="{_join([CUBE_HALF] * 3)}" '
                    'contype="0" conaffinity="0" rgba="0 0.4 0 1"/></body>')
    contact = "".join(f'<pair geom1="{first}" geom2="{second}"/>' for first, second in pairs)
    equality = ('<equality><joint joint1="finger_joint1" joint2="finger_joint2" '
                'solimp="0.95 0.99 0.001" solref="0.005 1"/></equality>' if gripper else "")
    impratio = ' impratio="10"' if task.bins else ""
    return ET.fromstring(f"""
<mujoco model="panda">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="0.002" integrator="implicitfast" iterations="6" ls_iterations="12"{impratio}/>
  <worldbody>
    <light pos="0 0 2" dir="0 0 -1"/>
    <geom name="table_geom" type="plane" pos="0 0.2 0" size="2.8 2.4 0.1"
          friction="0.2 0.005 0.0001" contype="0" conaffinity="0" rgba="0.6 0.5 0.4 1"/>
    <body name="link0"><geom type="capsule" fromto="0 0 0 0 0 0.333" size="0.06" {_DRAWN}/>
      {arm}
    </body>
    {scenery}
  </worldbody>
  {equality}
  <contact>{contact}</contact>
  <actuator>{servos}</actuator>
</mujoco>""")


def _join(values) -> str:
    return " ".join(f"{float(v):g}" for v in values)


class Arm(BraxGoalEnv):
    """One of ``TASKS`` (see the module's docstring)."""

    goal_axes = (0, 1, 2)

    def __init__(self, task: str = "push_easy", backend: str = "mjx"):
        if task not in TASKS:
            raise ValueError(f"task={task!r}; valid: {', '.join(TASKS)}")
        if backend not in BACKENDS:  # before anything is built or compiled
            raise ValueError(f"backend={backend!r}: the arm tasks run on "
                             f"{', '.join(BACKENDS)} only")
        self.task = TASKS[task]
        self.has_cube = task != "reach"
        root = panda_model(self.task, gripper=self.has_cube)
        # Gravity compensation holds a goal in the air where it is drawn.
        add_goal_marker(root, (0, 0, 0), "xyz", radius=CUBE_HALF).set("gravcomp", "1")
        super().__init__(to_xml(root), backend, ARM_SETTINGS)
        model = self.sys.mj_model
        self._joints_q = int(model.jnt_qposadr[model.joint("joint1").id])
        self._cube_q = (int(model.jnt_qposadr[model.body("cube").jntadr[0]]) if self.has_cube
                        else None)
        self._effector = self.sys.link_names.index("link7")
        self._fingers = ((self.sys.link_names.index("left_finger"),
                          self.sys.link_names.index("right_finger")) if self.has_cube else None)
        self.state_size = 17 if self.has_cube else 13
        self.goal_indices = (0, 1, 2) if self.has_cube else (7, 8, 9)
        self.goal_name = "cube (x, y, z)" if self.has_cube else "end effector (link 7) (x, y, z)"

    @property
    def action_size(self) -> int:
        return len(COMMANDED_JOINTS) + self.has_cube

    def control(self, action: jax.Array) -> jax.Array:
        """Servo targets from an action in [-1, 1]: the commanded joints across their ranges,
        the others held, and the gripper shut or open."""
        arm = jnp.zeros(len(LINKS)).at[jnp.asarray(COMMANDED_JOINTS)].set(
            action[:len(COMMANDED_JOINTS)])
        targets = (TARGET_LOW + TARGET_HIGH) / 2 + arm * (TARGET_HIGH - TARGET_LOW) / 2
        if not self.has_cube:
            return targets
        gripper = jnp.where(action[-1] > 0, FINGER_CLOSED, FINGER_OPEN)
        return jnp.concatenate([targets, jnp.full(2, gripper)])

    def initial_q_qd(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        cube_key, goal_key = jax.random.split(rng)
        task = self.task
        q = jnp.zeros(self.sys.q_size())
        arm = START_POSE if not self.has_cube else np.append(START_POSE, [FINGERS_OPEN] * 2)
        q = q.at[self._joints_q:self._joints_q + len(arm)].set(arm)
        if self.has_cube:
            cube = jnp.asarray(task.cube) + jax.random.uniform(
                cube_key, (2,), minval=-task.cube_noise, maxval=task.cube_noise)
            q = q.at[self._cube_q:self._cube_q + 7].set(
                jnp.concatenate([cube, jnp.array([CUBE_DROP, 1.0, 0.0, 0.0, 0.0])]))
        if task.lift is not None:
            goal = jnp.append(cube, GOAL_HEIGHT + jax.random.uniform(
                goal_key, (), minval=task.lift[0], maxval=task.lift[1]))
        else:
            size = 3 if task.goal_noise_3d else 2
            goal = jnp.asarray(task.goal[:size]) + jax.random.uniform(
                goal_key, (size,), minval=-task.goal_noise, maxval=task.goal_noise)
            if size == 2:
                goal = jnp.append(goal, GOAL_HEIGHT)
        q = q.at[self._marker_q].set(goal)
        return q, jnp.zeros(self.sys.qd_size())

    def observe_state(self, pipeline_state, action: jax.Array) -> jax.Array:
        q = pipeline_state.q
        joints = q[self._joints_q:self._joints_q + len(LINKS)]
        effector = [pipeline_state.x.pos[self._effector], pipeline_state.xd.vel[self._effector]]
        if not self.has_cube:
            return jnp.concatenate([joints, *effector])
        left, right = (pipeline_state.x.pos[link] for link in self._fingers)
        return jnp.concatenate([q[self._cube_q:self._cube_q + 3], joints, *effector,
                                jnp.linalg.norm(left - right)[None]])
