"""Scale-out of folder-driven workflows on Ray (the optional ``scale`` extra).

:mod:`.graph` decides which part of a workflow runs per batch of a folder's files (plain
Python, no Ray); :mod:`.ray_job` runs a per-batch function over the files on a Ray Data
actor pool (imports ``ray`` only when a job runs). The nodes' side (batch-aware savers,
the driver's finishing step) is ``nodes/_ray_batch.py``; the user-facing API is
``comfyui_gendeg.scale.run_workflow_on_ray``.
"""
