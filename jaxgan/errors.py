"""Errors a user can cause and fix. The CLIs print these without a traceback."""


class UserError(Exception):
  """A problem with the user's input, config or environment; the message says the fix."""


class ConfigError(UserError, ValueError):
  pass


class DatasetError(UserError):
  pass


class WorkdirError(UserError):
  pass


class NonFiniteLossError(UserError, FloatingPointError):
  pass
