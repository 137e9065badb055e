"""The run environment, in one place: what a run needs of the machine and the cluster, not of
the experiment.

* :mod:`~l2l.env.runtime`: the device, the CPU thread count, whether to compile;
* :mod:`~l2l.env.runtime_cache`: torch.compile's kernel caches, kept per user;
* :mod:`~l2l.env.distributed`: several processes (torchrun, srun) as one run, rank 0 writing;
* :mod:`~l2l.env.preemption`: SIGTERM/SIGINT (a cluster's preemption) as a clean stop;
* :mod:`~l2l.env.run_dir`: the run directory's lock, its recorded config, results never
  overwritten.

Nothing is imported here, so that a module needing one piece (the compile cache, say) does not
pull in the others.
"""
