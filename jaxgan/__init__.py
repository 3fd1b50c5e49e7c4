"""jaxgan: fast, faithful JAX/Flax versions of fast.ai lesson 12's models."""
__version__ = "0.1.0"


def train_and_evaluate(config, workdir):
  """Train `config` in `workdir` (resuming); see `jaxgan.experiment`."""
  from jaxgan.experiment import train_and_evaluate as run
  return run(config, workdir)


def evaluate(workdir, **kwargs):
  """Evaluate the latest checkpoint in `workdir`; see `jaxgan.experiment`."""
  from jaxgan.experiment import evaluate as run
  return run(workdir, **kwargs)
