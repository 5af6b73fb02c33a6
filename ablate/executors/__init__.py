"""Where a sweep's runs execute: :mod:`.local` (warm worker processes on this machine's
slots, with :mod:`.packing` for ``--per-gpu auto`` and :mod:`.mps` for ``--mps``) and
:mod:`.slurm` (job arrays through submitit). Each implements :class:`.base.Executor`, so
the scheduler never cares where runs go."""
