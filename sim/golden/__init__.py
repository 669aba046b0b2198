"""The golden model: bit- and cycle-exact reference for one chip (``Golden``), a tray of chips
(``GoldenTray``), and one slice stepped from outside (``SliceStepper``, the RTL unit tests'
reference)."""

from tinylpu.sim.golden.chip import Golden, ProgramError, RunResult
from tinylpu.sim.golden.stepper import SliceStepper
from tinylpu.sim.golden.tray import GoldenTray, TrayResult

__all__ = ["Golden", "ProgramError", "RunResult", "SliceStepper", "GoldenTray", "TrayResult"]
