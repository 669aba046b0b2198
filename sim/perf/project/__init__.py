"""Full-scale projection: an analytical model of an LPU deployment, calibrated on the compiler.

``tinylpu project --chip NAME|FILE --model NAME|FILE [--json]`` answers: how many chips does the
model need, how many tokens/s does one user get at batch 1, and what does a token cost in energy
(method: ``model.py`` and docs/projection.md).

* ``inputs``: the chip, model, fleet, Pareto and published-figure YAML files, read through
  ``tinylpu.schema`` (errors name file, line and field);
* ``model``: calibration on the compiler's schedules, placement and time per token, the GPU-only
  vs GPU + LPU Pareto points, the fleet mix, the comparison with published figures;
* ``report``: the text, the plots, docs/projection.md (from ``projection.md.in``) and the CLI.
"""

from tinylpu.sim.perf.project.inputs import (
    CHIP_SCHEMA,
    FLEET_SCHEMA,
    MODEL_SCHEMA,
    PARETO_SCHEMA,
    PUBLISHED_SCHEMA,
    ProjectError,
    _root,
    load_chip,
    load_fleet,
    load_model,
    pareto_config,
    published,
    shipped,
)
from tinylpu.sim.perf.project.model import (
    CAL_SHAPES,
    LAT_PATH,
    Calibration,
    calibrate,
    compare,
    fleet,
    frontier,
    model_bytes,
    pareto,
    project,
    weight_bytes_per_cycle,
)
from tinylpu.sim.perf.project.report import (
    describe,
    describe_fleet,
    main,
    plot_fleet,
    plot_pareto,
    render_doc,
    write_doc,
)

__all__ = ["ProjectError", "load_chip", "load_model", "load_fleet", "shipped", "calibrate", "project",
           "pareto", "frontier", "fleet", "compare", "main",
           "CHIP_SCHEMA", "MODEL_SCHEMA", "FLEET_SCHEMA", "PARETO_SCHEMA", "PUBLISHED_SCHEMA", "pareto_config",
           "published", "CAL_SHAPES", "LAT_PATH", "Calibration", "model_bytes", "weight_bytes_per_cycle",
           "describe", "describe_fleet", "plot_pareto", "plot_fleet", "write_doc", "render_doc", "_root"]
