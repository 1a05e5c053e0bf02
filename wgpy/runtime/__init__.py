"""The I/O shell: :mod:`~wgpy.runtime.interface` runs the sans-IO Device
against real time, sockets and a TUN device (see its docstring for which
modules hold threads, sockets and clocks)."""
