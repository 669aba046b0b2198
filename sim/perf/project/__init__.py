"""Full-scale projection: an analytical model of an LPU deployment, calibrated on the compiler.

``tinylpu project --chip NAME|FILE --model NAME|FILE [--json]`` answers: how many chips does the
model need, how many tokens/s does one user get at batch 1, and what does a token cost in energy
(method: ``model.py`` and docs/projection.md).

* ``inputs``: the chip, model, fleet, Pareto and published-figure YAML files, read through
  ``tinylpu.schema`` (errors name file, line and field);
* ``model``: calibration on the compiler's schedules, placement and time per token, the GPU-only
  vs GPU + LPU Pareto points, the fleet mix;
* ``vector``: one layer's critical-path vector program, scheduled by the compiler on the chip model;
* ``report``: the comparison with published figures (the only reader of the published figures), the
  sensitivity ranking, the text, the plots, docs/projection.md (from ``projection.md.in``), the CLI.
"""

from tinylpu.sim.perf.project.inputs import (
    CHIP_SCHEMA,
    DEPLOYMENT_SCHEMA,
    FLEET_SCHEMA,
    GPU_SCHEMA,
    MODEL_SCHEMA,
    PARETO_SCHEMA,
    PUBLISHED_SCHEMA,
    ProjectError,
    _root,
    find_deployment,
    load_chip,
    load_deployments,
    load_fleet,
    load_gpu,
    load_model,
    pareto_config,
    published,
    shipped,
    source_of,
)
from tinylpu.sim.perf.project.model import (
    CAL_SHAPES,
    LAT_PATH,
    Calibration,
    calibrate,
    deployment,
    fleet,
    frontier,
    gpu_step,
    model_bytes,
    pareto,
    project,
    weight_bytes_per_cycle,
)
from tinylpu.sim.perf.project.report import (
    compare,
    describe,
    describe_fleet,
    main,
    plot_fleet,
    plot_pareto,
    render_doc,
    sensitivity,
    write_doc,
)

__all__ = [
    "CAL_SHAPES",
    "CHIP_SCHEMA",
    "DEPLOYMENT_SCHEMA",
    "FLEET_SCHEMA",
    "GPU_SCHEMA",
    "LAT_PATH",
    "MODEL_SCHEMA",
    "PARETO_SCHEMA",
    "PUBLISHED_SCHEMA",
    "Calibration",
    "ProjectError",
    "_root",
    "calibrate",
    "compare",
    "deployment",
    "describe",
    "describe_fleet",
    "find_deployment",
    "fleet",
    "frontier",
    "gpu_step",
    "load_chip",
    "load_deployments",
    "load_fleet",
    "load_gpu",
    "load_model",
    "main",
    "model_bytes",
    "pareto",
    "pareto_config",
    "plot_fleet",
    "plot_pareto",
    "project",
    "published",
    "render_doc",
    "sensitivity",
    "shipped",
    "source_of",
    "weight_bytes_per_cycle",
    "write_doc",
]
