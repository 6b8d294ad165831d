"""Brax's own MJCF models, edited at run time, and Brax's per-pipeline settings for each robot.

Edits: a goal marker (a body on slide joints that nothing drives, so physics never moves it),
pushable objects (bodies on x/y slide joints at a fixed height), and wall boxes. One dedicated
contact bit, ``OBSTACLE_BIT``, makes the robot geoms named by a task collide with walls and
objects while adding no other pairs (no foot-foot, wall-floor or wall-wall contacts).
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import jax.numpy as jnp
import mujoco
from etils import epath

OBSTACLE_BIT = 2
# Brax custom parameters with one value per body (see brax.io.mjcf).
PER_BODY_CUSTOM = ("constraint_stiffness", "constraint_limit_stiffness", "constraint_ang_damping",
                   "constraint_vel_damping")
AXES = {"x": "1 0 0", "y": "0 1 0", "z": "0 0 1"}


def brax_model(name: str) -> ET.Element:
    """The root element of ``brax/envs/assets/<name>.xml``."""
    return ET.parse(epath.resource_path("brax") / f"envs/assets/{name}.xml").getroot()


def _vector(values: Sequence[float]) -> str:
    return " ".join(f"{float(v):g}" for v in values)


def add_slider(root: ET.Element, name: str, pos: Sequence[float], axes: str,
               geom: dict[str, str]) -> ET.Element:
    """A body at ``pos`` that moves only along ``axes`` (e.g. "xy"), with one geom. Its joints
    are appended to q after everything defined before it."""
    body = ET.SubElement(root.find("worldbody"), "body", name=name, pos=_vector(pos))
    for axis in axes:
        ET.SubElement(body, "joint", name=f"{name}_{axis}", type="slide", axis=AXES[axis],
                      limited="false", armature="0", damping="0", stiffness="0")
    ET.SubElement(body, "geom", name=f"{name}_geom", **geom)
    _extend_custom(root, "init_qpos", [0.0] * len(axes))
    for per_body in PER_BODY_CUSTOM:
        _extend_custom(root, per_body, None)
    _extend_custom(root, "elasticity", [0.0])
    return body


def add_goal_marker(root: ET.Element, pos: Sequence[float], axes: str,
                    radius: float) -> ET.Element:
    """A red sphere on slide joints that collides with nothing; q holds the goal offsets. (Its
    mass must be of the robot's order: the spring pipeline goes unstable with a tiny one.)"""
    return add_slider(root, "goal_marker", pos, axes,
                      {"type": "sphere", "size": f"{radius:g}", "contype": "0",
                       "conaffinity": "0", "rgba": "1 0 0 1",
                       "mass": "1"})


def add_walls(root: ET.Element, boxes: Sequence[tuple[float, float, float, float]],
              half_height: float) -> None:
    """Static boxes ``(centre_x, centre_y, half_x, half_y)`` standing on the floor."""
    worldbody = root.find("worldbody")
    for index, (x, y, half_x, half_y) in enumerate(boxes):
        ET.SubElement(worldbody, "geom", name=f"wall_{index}", type="box",
                      pos=_vector((x, y, half_height)),
                      size=_vector((half_x, half_y, half_height)),
                      contype=str(OBSTACLE_BIT), conaffinity="0", rgba="0.7 0.5 0.3 1")
    _extend_custom(root, "elasticity", [0.0] * len(boxes))


def collide_with_obstacles(root: ET.Element, geom_names: Sequence[str]) -> None:
    """Let the named robot geoms touch walls and objects (and nothing new besides)."""
    geoms = {geom.get("name"): geom for geom in root.iter("geom")}
    missing = [name for name in geom_names if name not in geoms]
    if missing:
        raise ValueError(f"the model has no geoms {missing}")
    for name in geom_names:
        geoms[name].set("conaffinity", str(OBSTACLE_BIT))


def pushable_geom(**attributes: str) -> dict[str, str]:
    """Geom attributes of a pushable object: it touches the robot's obstacle geoms, walls,
    other objects and the floor (bit 1), whose friction brings it to rest. (The spring and
    positional pipelines ignore joint damping, so friction is what works on every pipeline.)"""
    return {"contype": str(OBSTACLE_BIT | 1), "conaffinity": str(OBSTACLE_BIT), **attributes}


def _extend_custom(root: ET.Element, name: str, values: list[float] | None) -> None:
    """Keep one of Brax's custom per-joint/body/geom parameters the right length after adding
    to the model: append ``values`` (or repeat the first value for a new body). A parameter
    given as a single value applies to all and stays as it is."""
    numeric = root.find(f"./custom/numeric[@name='{name}']")
    if numeric is None or (name != "init_qpos" and len(numeric.get("data").split()) == 1):
        return
    data = numeric.get("data").split()
    added = [data[0]] if values is None else [f"{v:g}" for v in values]
    numeric.set("data", " ".join(data + added))


def to_xml(root: ET.Element) -> str:
    return ET.tostring(root, encoding="unicode")


@dataclasses.dataclass(frozen=True)
class PipelineSettings:
    """How Brax's own env for a robot sets up each pipeline.

    ``generalized`` and ``mjx`` keep the model's timestep and take ``n_frames`` physics steps per
    env step; ``spring`` and ``positional`` use a smaller timestep and more frames, and often
    other actuator gears, so that one env step lasts about as long.
    """

    n_frames: int
    spring_timestep: float
    spring_n_frames: int
    spring_gear: tuple[float, ...] | None = None  # also used by positional
    positional_gear: tuple[float, ...] | None = None  # overrides spring_gear for positional
    mjx_newton: bool = False  # Newton solver, 1 iteration, 4 line-search steps

    def configure(self, sys, backend: str):
        """(system, physics steps per env step) for ``backend``."""
        n_frames = self.n_frames
        gear = None
        if backend in ("spring", "positional"):
            sys = sys.tree_replace({"opt.timestep": self.spring_timestep})
            n_frames = self.spring_n_frames
            gear = self.spring_gear
        if backend == "positional" and self.positional_gear is not None:
            gear = self.positional_gear
        if gear is not None:
            gear = jnp.broadcast_to(jnp.asarray(gear, jnp.float32), sys.actuator.gear.shape)
            sys = sys.replace(actuator=sys.actuator.replace(gear=gear))
        if backend == "mjx" and self.mjx_newton:
            sys = sys.tree_replace({
                "opt.solver": mujoco.mjtSolver.mjSOL_NEWTON,
                "opt.disableflags": mujoco.mjtDisableBit.mjDSBL_EULERDAMP,
                "opt.iterations": 1,
                "opt.ls_iterations": 4,
            })
        return sys, n_frames

