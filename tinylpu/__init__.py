"""tinylpu: an open, scaled-down, synthesizable model of a Groq-style LPU."""

__version__ = "0.1.0"
