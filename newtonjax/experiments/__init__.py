"""The experiment runner: the optional top layer of newtonjax.

YAML configs (safe loading only) validated into frozen dataclasses
(:mod:`~newtonjax.experiments.config`), explicit problem and optimizer registries
(:mod:`~newtonjax.experiments.problems`, :mod:`~newtonjax.experiments.optimizers`),
the run loop and run folders (:mod:`~newtonjax.experiments.runner`), plots
(:mod:`~newtonjax.experiments.plots`) and the ``newtonjax`` command
(:mod:`~newtonjax.experiments.cli`). Its extra dependencies come with
``pip install "newtonjax[experiments]"``. The library never imports this package;
it imports the library's public API only.
"""
