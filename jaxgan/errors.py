"""Errors a user can cause and fix. The CLIs print these without a traceback."""


class UserError(Exception):
  """A problem with the user's input, config or environment; the message says the fix."""
  prefix = "error"
  exit_code = 2


class ConfigError(UserError, ValueError):
  pass


class DatasetError(UserError):
  pass


class WorkdirError(UserError):
  pass


class NonFiniteLossError(UserError, FloatingPointError):
  pass


class Interrupted(UserError):
  """Training stopped on SIGTERM / SIGINT after saving a checkpoint."""
  prefix = "stopped"

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code
