"""Ray as edgefg's engine (``pip install 'edgefg[distributed]'``): sweep trials as Ray tasks,
device nodes that advertise their target profile, and validation sharded over actors.

Nothing here is imported unless ``--ray`` (or ``edgefg worker``) is used; the device side needs
only the runtime (no torch).
"""
