"""Named configuration presets (``tiny``, ``paper``, ``mias``): see :mod:`mammolens.config`."""
