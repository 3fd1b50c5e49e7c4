"""Stopping a run cleanly: SIGTERM (preemption, kill) and SIGINT (Ctrl-C)."""
import os
import signal
import sys
import threading

import jax

from jaxgan import parallel

class StopSignals:
  """SIGTERM / SIGINT become a request to checkpoint and stop after the current step.

  A second signal ends the process at once (exit status 128 + signal), without
  a traceback: raising in the main thread would still wait for the steps
  already queued on the devices, and for threads, before the process exits.
  The checkpoints on disk are complete either way (unfinished saves are
  temporary folders, removed on the next start).
  """
  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    name = signal.Signals(signum).name
    if self.received is not None:
      print(f"\n{name} received again: stopping now, without saving (the last complete "
            "checkpoint is kept; run the same command again to resume from it).",
            file=sys.stderr, flush=True)
      os._exit(128 + signum)
    self.received = signum
    print(f"\n{name} received: saving a checkpoint after the current step, then stopping "
          "(send it again to stop at once, without saving).", file=sys.stderr, flush=True)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def requested(self, step: int, every: int) -> bool:
    """Whether to stop now. Several hosts must agree on the step, so they compare
    notes every `every` steps (one small collective); one host checks every step."""
    if jax.process_count() == 1:
      return self.received is not None
    if step % every:
      return False
    received = parallel.process_max(self.received or 0)
    self.received = self.received or (received or None)
    return received > 0
