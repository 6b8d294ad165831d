"""python -m crl.plan: its exact parts against hand counts, its model of the SGD step against
XLA's buffer assignment here, its tables, and crl.train refusing (or reporting) a run that does
not fit an accelerator's memory."""

import dataclasses
import re

import jax
import pytest
from tiny import TINY, cli_args, refusal_on_a_small_device

from crl import plan, runs
from crl.bench import bench_config
from crl.config import Config, validate
from crl.train import EXIT_OUT_OF_MEMORY, main


def test_the_exact_parts_are_the_hand_counted_sizes():
    """Depth 8, width 16, point maze (state 2, goal 2, action 2), repr 8: parameters counted by
    hand from the layers; Adam keeps two moments of each; the replay holds state, action and
    trajectory id (4 bytes each) per step and env."""
    config = validate(dataclasses.replace(TINY, depth=8, width=16, repr_dim=8, num_envs=8,
                                          max_replay_size=200))
    width = 16

    def mlp(inputs, outputs, depth=8):
        layer = lambda n_in: n_in * width + width + 2 * width  # Dense + LayerNorm
        return layer(inputs) + depth * layer(width) + width * outputs + outputs

    parameters = mlp(2 + 2, 8) + mlp(2, 8) + mlp(2 + 2, 2 * 2)  # phi(s, a), psi(g), actor(s, g)
    predicted = plan.make_plan(config, plan.DEVICES["h100"])
    assert predicted.memory["parameters"] == 4 * parameters
    # Adam: two moments of every parameter, a step count per optimiser (3), log alpha.
    assert predicted.memory["optimiser states"] == 4 * (2 * parameters + 1 + 2) + 4 * 3
    assert predicted.memory["replay buffer"] == 200 * 8 * (2 + 2 + 1) * 4
    assert predicted.memory["gradients"] == 4 * parameters
    # The actor at width 24 without LayerNorm, the critic at 16: each family counted apart.
    ablated = validate(dataclasses.replace(config, actor_width=24, actor_layer_norm=False))
    actor = (2 + 2) * 24 + 24 + 8 * (24 * 24 + 24) + 24 * 2 * 2 + 2 * 2
    assert plan.make_plan(ablated, plan.DEVICES["h100"]).memory["parameters"] == 4 * (
        mlp(2 + 2, 8) + mlp(2, 8) + actor)
    # Three seeds on one device: three of everything; on three devices, one per device.
    seeds = dataclasses.replace(config, seeds=(0, 1, 2))
    assert plan.make_plan(seeds, plan.DEVICES["h100"]).total == pytest.approx(3 * predicted.total)
    assert plan.make_plan(seeds, plan.DEVICES["h100"], 3).total == pytest.approx(predicted.total)


@pytest.mark.parametrize(("depth", "remat"), [(4, "elementwise"), (64, "none"),
                                              (64, "elementwise"), (64, "blocks")])
def test_the_step_model_is_within_15_percent_of_xla(depth, remat, optimised_compile):
    """Batch 512, width 256: the model's gradients + activations + logits against XLA's
    temporaries of the compiled step (docs/performance.md has depths 4 to 1024)."""
    config = bench_config(depth=depth, batch_size=512, remat=remat)  # width 256
    predicted = plan.make_plan(config, plan.DEVICES["h100"])
    model = sum(predicted.memory[k] for k in ("gradients", "activations", "logits"))
    xla = plan.xla_step_bytes(config)
    assert abs(model / xla - 1) <= 0.15, (model, xla)


def test_the_tables_of_a_paper_run(capsys):
    a100 = plan.main(["--env", "humanoid_u_maze", "--depth", "1024", "--gpu", "a100-40g"])
    out = capsys.readouterr().out
    assert "on 1 x A100 40 GB" in out and "memory per device:" in out
    assert re.search(r"total +[\d.]+ GiB +of 27\.94 GiB usable: fits", out), out
    for mode in ("elementwise", "blocks", "none"):
        assert re.search(rf"remat {mode} +depth +\d+ +batch +\d+", out), out
    assert "recommended: --remat elementwise" in out
    # The run's FLOPs: 2.48M SGD steps of the step's FLOPs, plus acting.
    assert a100.sgd_steps == 3100 * 800 and a100.run_flops > a100.step_flops * a100.sgd_steps
    assert re.search(r"the run: 2,480,000 SGD steps, [\d.e+]+ FLOP .*, [\d.]+ h", out), out
    h100 = plan.main(["--env", "humanoid_u_maze", "--depth", "1024", "--gpu", "h100"])
    # Products scale with the datasheets' peaks (156 and 495 TFLOP/s), traffic with their
    # bandwidths (1,555 and 3,350 GB/s).
    (a100_products, a100_traffic), (h100_products, h100_traffic) = (
        a100.step_seconds, h100.step_seconds)
    assert h100_products == pytest.approx(a100_products * 156 / 495)
    assert h100_traffic == pytest.approx(a100_traffic * 1555 / 3350)
    # bfloat16 halves the products' time on NVIDIA (double peak), and the activations' traffic
    # (half the bytes), not Adam's (float32 parameters).
    bf16 = plan.main(["--env", "humanoid_u_maze", "--depth", "1024", "--gpu", "h100",
                      "--compute-dtype", "bfloat16"])
    assert bf16.step_seconds[0] == pytest.approx(h100_products / 2, rel=0.01)
    adam = plan.ADAM_ARRAYS * h100.memory["parameters"]
    assert bf16.step_traffic - adam == pytest.approx((h100.step_traffic - adam) / 2, rel=0.01)


def test_the_step_time_is_its_products_at_the_peak_plus_its_traffic_at_the_bandwidth():
    """GCBC (one trained pass through the actor: 3 passes' worth of work) at depth 8, width 16,
    batch 32 on the point maze (state 2 + goal 2 in, 2 x 2 out), counted by hand."""
    config = validate(dataclasses.replace(TINY, agent="gcbc", depth=8, width=16, batch_size=32,
                                          repr_dim=Config().repr_dim))
    width, batch, layers = 16, 32, 8 + 1  # the input layer has LayerNorm and Swish too
    parameters = (4 * width + 3 * width) + 8 * (width * width + 3 * width) + width * 4 + 4
    products = 3 * 2 * batch * (4 * width + 8 * width * width + width * 4)
    traffic = (plan.ARRAYS_PER_LAYER_PASS["elementwise"] * 3 * layers * batch * width * 4
               + plan.ADAM_ARRAYS * 4 * parameters)
    device = plan.Device(1e12, 2e9, 4e9, 5e9, "a hand-made device")
    predicted = plan.make_plan(config, device, peak_fraction=0.5, bandwidth_fraction=0.8)
    assert predicted.memory["parameters"] == 4 * parameters
    # The plan counts the input layer with state, action and goal (6 inputs, not 4).
    assert predicted.step_flops == pytest.approx(products, rel=0.02)
    assert predicted.step_traffic == pytest.approx(traffic)
    assert predicted.step_seconds == pytest.approx(
        (predicted.step_flops / (2e9 * 0.5), traffic / (5e9 * 0.8)))
    # Recomputing whole blocks adds one forward pass of the actor's products, and its traffic.
    blocks = plan.make_plan(dataclasses.replace(config, remat="blocks"), device)
    assert blocks.recompute_flops == pytest.approx(predicted.step_flops / 3)
    assert blocks.step_traffic == pytest.approx(
        plan.ARRAYS_PER_LAYER_PASS["blocks"] * 4 * layers * batch * width * 4
        + plan.ADAM_ARRAYS * 4 * parameters)


def test_a_run_that_will_not_fit_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    """A simulated accelerator with 70% of what TINY with 64 envs and a larger replay needs:
    refused before compiling, in one line, with options that do fit; nothing written."""
    config = validate(dataclasses.replace(TINY, render=False, num_envs=64, max_replay_size=400,
                                          total_env_steps=64 * 25 + 2 * 640,
                                          run_dir=str(tmp_path), run_name="big"))
    need = plan.make_plan(config, plan.DEVICES["h100"]).total
    line = refusal_on_a_small_device(config, 0.7, monkeypatch, capsys)
    match = re.fullmatch(
        r"crl: error: this run will not fit: crl\.plan predicts ([\d.]+) MiB per device of the "
        r"([\d.]+) MiB available; would fit: (.*) \(python -m crl\.plan prints the breakdown\)",
        line)
    assert match, line
    assert float(match[1]) == pytest.approx(need / 2**20, abs=0.05)
    assert float(match[2]) == pytest.approx(0.7 * need / 2**20, abs=0.05)
    advice = dict(option.split(" ") for option in match[3].split(" or "))
    envs = int(advice["--num-envs"])
    assert 0 < envs < 64
    smaller = dataclasses.replace(config, num_envs=envs)
    assert plan.make_plan(smaller, plan.DEVICES["h100"]).total <= 0.7 * need
    assert not list(tmp_path.iterdir())


def test_out_of_memory_while_compiling_is_one_line_and_the_run_stays(tmp_path, monkeypatch,
                                                                    capsys):
    def exhausted(*args, **kwargs):
        raise jax.errors.JaxRuntimeError(
            "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 123456789 bytes.")

    monkeypatch.setattr("crl.train.timed_compile", exhausted)
    with pytest.raises(SystemExit) as exit:
        main([*cli_args(dataclasses.replace(TINY, render=False)), "--run-dir", str(tmp_path),
              "--run-name", "oom"])
    assert exit.value.code == EXIT_OUT_OF_MEMORY
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["crl: error: this run ran out of memory (JaxRuntimeError: RESOURCE_EXHAUSTED: "
                     "Out of memory while trying to allocate 123456789 bytes.); what it "
                     "checkpointed is intact: resume it with --remat blocks, a smaller "
                     "--batch-size or fewer --num-envs (python -m crl.plan --gpu local prints "
                     "what fits)"]
    assert runs.load_config(tmp_path / "oom").run_name == "oom"  # resumable
