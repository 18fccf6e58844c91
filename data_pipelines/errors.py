"""The project's data exception (its own module so that every import path shares one class)."""


class DataError(ValueError):
  """A data file or record that cannot be used: names the file, record and problem."""
