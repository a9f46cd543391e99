"""Plug-in context modules that attach to any framework through its wiring (IDR, ...)."""
