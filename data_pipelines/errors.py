"""The project's exceptions' common base, and the data exception.

Every error the project raises on purpose (bad data, config, model, checkpoint,
evaluation request) derives from `ProjectError`, so that each command-line
`main` turns it into one `error: ...` line and exit code 2 instead of a traceback.
"""


class ProjectError(Exception):
  """An error with a message meant for the user (file, record or key, and the problem)."""


class DataError(ProjectError, ValueError):
  """A data file or record that cannot be used: names the file, record and problem."""
