"""First-party torpor backends.  Each subpackage is one backend, named like its
entry point in the ``torpor.backends`` group, and imported only when selected."""
