"""
The ``conduct`` Salt runner as a Salt extension.

Salt's loader imports this package through its ``salt.loader`` entry point
and loads the runner modules of its ``runners/`` directory, so that
``salt-run conduct.group ...`` works without ``runner_dirs``.
"""
