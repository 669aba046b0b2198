"""The golden model: bit- and cycle-exact reference for one chip (``Golden``; ``FastGolden`` in
``fast.py`` gives the same without stepping cycles), a tray of chips (``GoldenTray``: its chips'
per-cycle models in lockstep, or by default the fast tray of ``fasttray.py``), and one slice stepped
from outside (``SliceStepper``, the RTL unit tests' reference)."""

from tinylpu.sim.golden.chip import Golden, ProgramError, RunResult
from tinylpu.sim.golden.stepper import SliceStepper
from tinylpu.sim.golden.tray import GoldenTray, TrayResult

__all__ = ["Golden", "ProgramError", "RunResult", "SliceStepper", "GoldenTray", "TrayResult"]
