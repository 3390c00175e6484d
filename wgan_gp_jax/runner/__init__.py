"""The experiment runner: the host loop and its pure schedule, loading a finished run, the work-directory layout,
checkpoints, the work directory's lock, preemption, FID while training, metric files, progress, pictures, logs and the
process settings XLA:CPU's speed depends on. It builds the core's parts from a config and hands them down; nothing
below it imports it."""
