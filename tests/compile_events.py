"""What scripts run in a fresh interpreter start with to count numba's compilations: a
listener on numba's "numba:compile" events (a kernel loaded from the disk cache raises none)
that appends each compiled function's name to the list ``compiled``."""

COUNT_COMPILES = """
from numba.core import event
compiled = []
class Count(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__qualname__)
    def on_end(self, ev):
        pass
event.register("numba:compile", Count())
"""
